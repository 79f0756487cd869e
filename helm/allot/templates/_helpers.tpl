{{/*
Names and labels.
*/}}
{{- define "allot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "allot.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "allot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "allot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "allot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "allot.labels" -}}
helm.sh/chart: {{ include "allot.chart" . }}
{{ include "allot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the serving pods (the migration Job's pods carry component=migrate instead). */}}
{{- define "allot.serverSelectorLabels" -}}
{{ include "allot.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "allot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "allot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "allot.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "allot.isSqlite" -}}
{{- if eq .Values.database.mode "sqlite" }}true{{ end }}
{{- end }}

{{/*
Checks every rule the schema cannot express; renders nothing. Included by every workload.
*/}}
{{- define "allot.validate" -}}
{{- $db := .Values.database }}
{{- if eq $db.mode "sqlite" }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "database.mode=sqlite runs exactly one replica (one process per SQLite file): replicaCount is %d, set it to 1 or use database.mode=postgres" (int .Values.replicaCount)) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "database.mode=sqlite runs exactly one replica: autoscaling.enabled must be false (use database.mode=postgres to scale)" }}
{{- end }}
{{- if or $db.url $db.existingSecret }}
{{- fail "database.url and database.existingSecret are for database.mode=postgres; SQLite mode uses sqlite:///data/allot.db on the StatefulSet's volume" }}
{{- end }}
{{- if or $db.tls.sslmode $db.tls.caSecret $db.tls.clientCertSecret }}
{{- fail "database.tls is for database.mode=postgres" }}
{{- end }}
{{- else }}
{{- if and $db.url $db.existingSecret }}
{{- fail "set one of database.url and database.existingSecret, not both" }}
{{- end }}
{{- if not (or $db.url $db.existingSecret) }}
{{- fail "database.mode=postgres needs the database: set database.url (the chart keeps it in a Secret) or database.existingSecret (a Secret holding DATABASE_URL under database.existingSecretKey)" }}
{{- end }}
{{- if and $db.url (not (hasPrefix "postgres" $db.url)) }}
{{- fail "database.url must be a postgres:// or postgresql:// URL in database.mode=postgres" }}
{{- end }}
{{- end }}
{{- $a := .Values.auth }}
{{- if and $a.hs256.secret $a.hs256.existingSecret }}
{{- fail "set one of auth.hs256.secret and auth.hs256.existingSecret, not both" }}
{{- end }}
{{- if and $a.hs256.secret (lt (len $a.hs256.secret) 32) }}
{{- fail "auth.hs256.secret must be at least 32 bytes" }}
{{- end }}
{{- if and $a.jwks.configMap $a.jwks.secret }}
{{- fail "set one of auth.jwks.configMap and auth.jwks.secret, not both" }}
{{- end }}
{{- if and $a.publicKeys.configMap $a.publicKeys.secret }}
{{- fail "set one of auth.publicKeys.configMap and auth.publicKeys.secret, not both" }}
{{- end }}
{{- if and (or $a.publicKeys.configMap $a.publicKeys.secret) (not $a.publicKeys.keys) }}
{{- fail "auth.publicKeys.keys must name the PEM entries of the ConfigMap/Secret to use" }}
{{- end }}
{{- if and $a.publicKeys.keys (not (or $a.publicKeys.configMap $a.publicKeys.secret)) }}
{{- fail "auth.publicKeys.keys needs auth.publicKeys.configMap or auth.publicKeys.secret" }}
{{- end }}
{{- if not (or $a.hs256.secret $a.hs256.existingSecret $a.jwks.configMap $a.jwks.secret $a.publicKeys.configMap $a.publicKeys.secret) }}
{{- fail "no token keys configured: allot refuses to serve without them. Set one of auth.hs256.secret, auth.hs256.existingSecret, auth.jwks.configMap, auth.jwks.secret, auth.publicKeys.configMap or auth.publicKeys.secret" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret, e.g. from cert-manager)" }}
{{- end }}
{{- if and .Values.tls.clientCA.secretName (not .Values.tls.enabled) }}
{{- fail "tls.clientCA needs tls.enabled" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- $ports := list (int .Values.ports.grpc) (int .Values.ports.metrics) (int .Values.ports.health) }}
{{- if ne (len (uniq $ports)) 3 }}
{{- fail "ports.grpc, ports.metrics and ports.health must differ" }}
{{- end }}
{{- $s := .Values.shutdown }}
{{- $least := add (int $s.preStopSleepSeconds) (int $s.graceSeconds) 5 }}
{{- if and (not (kindIs "invalid" $s.terminationGracePeriodSeconds)) (lt (int $s.terminationGracePeriodSeconds) $least) }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) must be at least shutdown.preStopSleepSeconds + shutdown.graceSeconds + 5 = %d, or the kubelet kills allot before in-flight calls finish" (int $s.terminationGracePeriodSeconds) $least) }}
{{- end }}
{{- end }}

{{/* preStop sleep + allot's grace + a margin for stopping background work and exiting. */}}
{{- define "allot.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown }}
{{- if kindIs "invalid" $s.terminationGracePeriodSeconds }}
{{- add (int $s.preStopSleepSeconds) (int $s.graceSeconds) 10 }}
{{- else }}
{{- int $s.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The port the kubelet's gRPC probes use: the plaintext health port when the gRPC port has TLS. */}}
{{- define "allot.probePort" -}}
{{- if .Values.tls.enabled }}{{ int .Values.ports.health }}{{ else }}{{ int .Values.ports.grpc }}{{ end }}
{{- end }}

{{/* Secret and key holding DATABASE_URL for the serving pods (PostgreSQL mode). */}}
{{- define "allot.dbSecretName" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecret }}{{ else }}{{ include "allot.fullname" . }}-db{{ end }}
{{- end }}

{{- define "allot.dbSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}DATABASE_URL{{ end }}
{{- end }}

{{/*
... and for the migration hook Job: on a first install the hook runs before the release's own
Secret exists, so a chart-made URL is also written to a hook Secret (see secret-db.yaml).
*/}}
{{- define "allot.migrateDbSecretName" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecret }}{{ else }}{{ include "allot.fullname" . }}-db-migrate{{ end }}
{{- end }}

{{- define "allot.hs256SecretName" -}}
{{- if .Values.auth.hs256.existingSecret }}{{ .Values.auth.hs256.existingSecret }}{{ else }}{{ include "allot.fullname" . }}-jwt{{ end }}
{{- end }}

{{- define "allot.hs256SecretKey" -}}
{{- if .Values.auth.hs256.existingSecret }}{{ .Values.auth.hs256.existingSecretKey }}{{ else }}ALLOT_JWT_HS256_SECRET{{ end }}
{{- end }}

{{- define "allot.hasHs256" -}}
{{- if or .Values.auth.hs256.secret .Values.auth.hs256.existingSecret }}true{{ end }}
{{- end }}

{{/* Container security context: fixed hardening plus the configured ids. */}}
{{- define "allot.containerSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.podSecurityContext.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.podSecurityContext.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "allot.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.podSecurityContext.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.podSecurityContext.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
{{- with .Values.podSecurityContext.fsGroup }}
fsGroup: {{ . }}
{{- end }}
{{- with .Values.podSecurityContext.fsGroupChangePolicy }}
fsGroupChangePolicy: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
DATABASE_URL and the database's TLS settings. Called with (dict "root" $ "secretName" NAME).
PostgreSQL: the URL from a Secret (secretKeyRef, never a plain value) and TLS as the libpq
variables, which sqlx reads as defaults before it applies the URL's own query parameters.
SQLite: a fixed, non-secret URL on the volume mounted at /data.
*/}}
{{- define "allot.databaseEnv" -}}
{{- $root := .root }}
{{- $db := $root.Values.database }}
{{- if eq $db.mode "sqlite" }}
- name: DATABASE_URL
  value: "sqlite:///data/allot.db?mode=rwc"
{{- else }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ include "allot.dbSecretKey" $root }}
{{- with $db.tls.sslmode }}
- name: PGSSLMODE
  value: {{ . | quote }}
{{- end }}
{{- if $db.tls.caSecret }}
- name: PGSSLROOTCERT
  value: /etc/allot/db-ca/{{ $db.tls.caKey }}
{{- end }}
{{- if $db.tls.clientCertSecret }}
- name: PGSSLCERT
  value: /etc/allot/db-client/tls.crt
- name: PGSSLKEY
  value: /etc/allot/db-client/tls.key
{{- end }}
{{- end }}
{{- end }}

{{- define "allot.databaseVolumeMounts" -}}
{{- if ne .Values.database.mode "sqlite" }}
{{- if .Values.database.tls.caSecret }}
- name: db-ca
  mountPath: /etc/allot/db-ca
  readOnly: true
{{- end }}
{{- if .Values.database.tls.clientCertSecret }}
- name: db-client
  mountPath: /etc/allot/db-client
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "allot.databaseVolumes" -}}
{{- if ne .Values.database.mode "sqlite" }}
{{- with .Values.database.tls.caSecret }}
- name: db-ca
  secret:
    secretName: {{ . }}
    defaultMode: 0444
{{- end }}
{{- with .Values.database.tls.clientCertSecret }}
- name: db-client
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}

{{/* ALLOT_MIGRATE for the serving container. */}}
{{- define "allot.migrateMode" -}}
{{- if or (eq .Values.database.mode "sqlite") .Values.migrations.enabled }}check{{ else }}auto{{ end }}
{{- end }}

{{/*
The pod template of the serving workload (a Deployment in PostgreSQL mode, a StatefulSet in
SQLite mode).
*/}}
{{- define "allot.podTemplate" -}}
{{- $sqlite := eq .Values.database.mode "sqlite" }}
{{- $probePort := include "allot.probePort" . | int }}
metadata:
  labels:
    {{- include "allot.labels" . | nindent 4 }}
    app.kubernetes.io/component: server
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- /* Chart-made Secrets are not reloaded by allot: a change rolls the pods. */}}
    checksum/secrets: {{ print (include (print $.Template.BasePath "/secret-db.yaml") .) (include (print $.Template.BasePath "/secret-jwt.yaml") .) | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "allot.serviceAccountName" . }}
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ include "allot.terminationGracePeriodSeconds" . }}
  securityContext:
    {{- include "allot.podSecurityContext" . | nindent 4 }}
  {{- if $sqlite }}
  initContainers:
    - name: migrate
      image: {{ include "allot.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["migrate"]
      env:
        {{- include "allot.databaseEnv" (dict "root" . "secretName" "") | trim | nindent 8 }}
        {{- if .Values.logging.json }}
        - name: ALLOT_LOG_JSON
          value: "true"
        {{- end }}
        - name: RUST_LOG
          value: {{ .Values.logging.level | quote }}
      securityContext:
        {{- include "allot.containerSecurityContext" . | nindent 8 }}
      {{- with .Values.migrations.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: data
          mountPath: /data
        - name: tmp
          mountPath: /tmp
  {{- end }}
  containers:
    - name: allot
      image: {{ include "allot.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["serve"]
      ports:
        - name: grpc
          containerPort: {{ .Values.ports.grpc }}
          protocol: TCP
        {{- if .Values.metrics.enabled }}
        - name: metrics
          containerPort: {{ .Values.ports.metrics }}
          protocol: TCP
        {{- end }}
        {{- if .Values.tls.enabled }}
        - name: health
          containerPort: {{ .Values.ports.health }}
          protocol: TCP
        {{- end }}
      env:
        - name: ALLOT_LISTEN
          value: "0.0.0.0:{{ .Values.ports.grpc }}"
        {{- include "allot.databaseEnv" (dict "root" . "secretName" (include "allot.dbSecretName" .)) | trim | nindent 8 }}
        - name: ALLOT_MIGRATE
          value: {{ include "allot.migrateMode" . | quote }}
        - name: ALLOT_SHUTDOWN_GRACE
          value: "{{ .Values.shutdown.graceSeconds }}s"
        {{- if include "allot.hasHs256" . }}
        - name: ALLOT_JWT_HS256_SECRET
          valueFrom:
            secretKeyRef:
              name: {{ include "allot.hs256SecretName" . }}
              key: {{ include "allot.hs256SecretKey" . }}
        {{- end }}
        {{- if or .Values.auth.jwks.configMap .Values.auth.jwks.secret }}
        - name: ALLOT_JWT_JWKS
          value: /etc/allot/jwks/{{ .Values.auth.jwks.key }}
        {{- end }}
        {{- if .Values.auth.publicKeys.keys }}
        - name: ALLOT_JWT_PUBLIC_KEYS
          value: {{ $paths := list }}{{ range .Values.auth.publicKeys.keys }}{{ $paths = append $paths (printf "/etc/allot/public-keys/%s" .) }}{{ end }}{{ join "," $paths | quote }}
        {{- end }}
        - name: ALLOT_JWT_ISSUER
          value: {{ .Values.auth.issuer | quote }}
        - name: ALLOT_JWT_AUDIENCE
          value: {{ .Values.auth.audience | quote }}
        {{- if .Values.tls.enabled }}
        - name: ALLOT_TLS_CERT
          value: /etc/allot/tls/tls.crt
        - name: ALLOT_TLS_KEY
          value: /etc/allot/tls/tls.key
        - name: ALLOT_HEALTH_LISTEN
          value: "0.0.0.0:{{ .Values.ports.health }}"
        {{- if .Values.tls.clientCA.secretName }}
        - name: ALLOT_TLS_CLIENT_CA
          value: /etc/allot/client-ca/{{ .Values.tls.clientCA.key }}
        {{- end }}
        {{- end }}
        {{- if .Values.metrics.enabled }}
        - name: ALLOT_METRICS_LISTEN
          value: "0.0.0.0:{{ .Values.ports.metrics }}"
        {{- end }}
        {{- if .Values.logging.json }}
        - name: ALLOT_LOG_JSON
          value: "true"
        {{- end }}
        - name: RUST_LOG
          value: {{ .Values.logging.level | quote }}
        - name: ALLOT_ACCESS_LOG_RATE
          value: {{ .Values.logging.accessLogRate | quote }}
        {{- with .Values.settings.maxHoldTtl }}
        - name: ALLOT_MAX_HOLD_TTL
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.settings.sweepInterval }}
        - name: ALLOT_SWEEP_INTERVAL
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.settings.idempotencyRetention }}
        - name: ALLOT_IDEMPOTENCY_RETENTION
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.settings.eventRetention }}
        - name: ALLOT_EVENT_RETENTION
          value: {{ . | quote }}
        {{- end }}
        {{- if .Values.settings.webhookAllowPrivate }}
        - name: ALLOT_WEBHOOK_ALLOW_PRIVATE
          value: "true"
        {{- end }}
        {{- with .Values.settings.webhookTimeout }}
        - name: ALLOT_WEBHOOK_TIMEOUT
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.settings.webhookRetrySchedule }}
        - name: ALLOT_WEBHOOK_RETRY_SCHEDULE
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.tracing.otlpEndpoint }}
        - name: OTEL_EXPORTER_OTLP_ENDPOINT
          value: {{ . | quote }}
        - name: OTEL_SERVICE_NAME
          value: {{ $.Values.tracing.serviceName | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- /* gRPC probes on grpc.health.v1: "" (the database answers, the ledger commits) for
      readiness, "liveness" (the process is up; a database outage restarts nothing) for
      startup and liveness. */}}
      startupProbe:
        grpc:
          port: {{ $probePort }}
          service: liveness
        periodSeconds: {{ .Values.probes.startup.periodSeconds }}
        timeoutSeconds: {{ .Values.probes.startup.timeoutSeconds }}
        failureThreshold: {{ .Values.probes.startup.failureThreshold }}
      readinessProbe:
        grpc:
          port: {{ $probePort }}
        periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
        timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
        failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
        successThreshold: {{ .Values.probes.readiness.successThreshold }}
      livenessProbe:
        grpc:
          port: {{ $probePort }}
          service: liveness
        periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
        timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
        failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
      {{- if gt (int .Values.shutdown.preStopSleepSeconds) 0 }}
      lifecycle:
        {{- /* Native sleep (the image has no shell): endpoints leave the Services before
        allot stops accepting. */}}
        preStop:
          sleep:
            seconds: {{ .Values.shutdown.preStopSleepSeconds }}
      {{- end }}
      securityContext:
        {{- include "allot.containerSecurityContext" . | nindent 8 }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $sqlite }}
        - name: data
          mountPath: /data
        {{- end }}
        {{- include "allot.databaseVolumeMounts" . | trim | nindent 8 }}
        {{- if .Values.tls.enabled }}
        - name: tls
          mountPath: /etc/allot/tls
          readOnly: true
        {{- if .Values.tls.clientCA.secretName }}
        - name: client-ca
          mountPath: /etc/allot/client-ca
          readOnly: true
        {{- end }}
        {{- end }}
        {{- if or .Values.auth.jwks.configMap .Values.auth.jwks.secret }}
        - name: jwks
          mountPath: /etc/allot/jwks
          readOnly: true
        {{- end }}
        {{- if or .Values.auth.publicKeys.configMap .Values.auth.publicKeys.secret }}
        - name: public-keys
          mountPath: /etc/allot/public-keys
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
    {{- include "allot.databaseVolumes" . | trim | nindent 4 }}
    {{- if .Values.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ .Values.tls.secretName }}
        defaultMode: 0440
    {{- with .Values.tls.clientCA.secretName }}
    - name: client-ca
      secret:
        secretName: {{ . }}
        defaultMode: 0444
    {{- end }}
    {{- end }}
    {{- if .Values.auth.jwks.configMap }}
    - name: jwks
      configMap:
        name: {{ .Values.auth.jwks.configMap }}
        defaultMode: 0444
    {{- else if .Values.auth.jwks.secret }}
    - name: jwks
      secret:
        secretName: {{ .Values.auth.jwks.secret }}
        defaultMode: 0444
    {{- end }}
    {{- if .Values.auth.publicKeys.configMap }}
    - name: public-keys
      configMap:
        name: {{ .Values.auth.publicKeys.configMap }}
        defaultMode: 0444
    {{- else if .Values.auth.publicKeys.secret }}
    - name: public-keys
      secret:
        secretName: {{ .Values.auth.publicKeys.secret }}
        defaultMode: 0444
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.topologySpreadConstraints }}
  {{- /* A constraint without a labelSelector gets the serving pods' labels. */}}
  {{- $constraints := list }}
  {{- range .Values.topologySpreadConstraints }}
  {{- $c := deepCopy . }}
  {{- if not (hasKey $c "labelSelector") }}
  {{- $_ := set $c "labelSelector" (dict "matchLabels" (include "allot.serverSelectorLabels" $ | fromYaml)) }}
  {{- end }}
  {{- $constraints = append $constraints $c }}
  {{- end }}
  topologySpreadConstraints:
    {{- toYaml $constraints | nindent 4 }}
  {{- end }}
{{- end }}
