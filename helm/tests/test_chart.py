"""Tests of the allot Helm chart without a helm binary or a cluster.

The chart is linted and rendered by Helm's own engine (helm-python-sdk bundles the Helm 4 Go
SDK as a shared library), every rendered object is validated against the Kubernetes OpenAPI
schemas shipped by kubernetes-validate (strict: unknown fields are errors) for the oldest
Kubernetes the chart supports and the newest the package knows, and the fields that matter are
asserted. ServiceMonitor (a Prometheus Operator CRD) has no schema there: it is checked against
a small schema of the fields the chart sets (SERVICE_MONITOR_SCHEMA).

Run through .ci/chart, which prepares the virtualenv.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "allot"
VALUES_DIR = HERE / "values"
RELEASE = "billing"
NAMESPACE = "payments"
FULLNAME = "billing-allot"

GOOD_SETS = ["postgres-default", "postgres-full", "sqlite", "jwks-configmap", "publickeys-secret"]
# The chart's floor (Chart.yaml kubeVersion) and the newest schemas kubernetes-validate has.
KUBE_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]

SERVER_CONTAINER = "allot"

SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


# --- rendering -------------------------------------------------------------------------------


class Rendered:
    """A rendered release: its objects (hooks included) and NOTES.txt."""

    def __init__(self, manifests: dict[str, str]):
        self.files = manifests
        self.notes = manifests.get("allot/templates/NOTES.txt", "")
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.objects.append(doc)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def workload(self) -> dict[str, Any]:
        found = self.all("Deployment") + self.all("StatefulSet")
        assert len(found) == 1, [o["kind"] for o in found]
        return found[0]

    def server(self) -> dict[str, Any]:
        return container(self.workload()["spec"]["template"]["spec"], SERVER_CONTAINER)

    def hooks(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if "helm.sh/hook" in annotations(o)]

    def text_outside_secrets(self) -> str:
        """Every rendered byte except Secret objects (NOTES.txt included)."""
        parts = [self.notes]
        parts += [yaml.safe_dump(o) for o in self.objects if o["kind"] != "Secret"]
        return "\n".join(parts)


def annotations(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    for c in pod_spec["containers"] + pod_spec.get("initContainers", []):
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name}")


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def pod_specs(r: Rendered) -> list[dict[str, Any]]:
    out = []
    for o in r.objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            out.append(o["spec"]["template"]["spec"])
    return out


def all_containers(r: Rendered) -> list[dict[str, Any]]:
    return [c for spec in pod_specs(r) for c in spec["containers"] + spec.get("initContainers", [])]


def values_file(name: str) -> dict[str, Any]:
    with open(VALUES_DIR / f"{name}.yaml") as f:
        return yaml.safe_load(f) or {}


def render(values: dict[str, Any]) -> Rendered:
    with helm.Chart.load(CHART) as chart:
        return Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True))


@functools.lru_cache(maxsize=None)
def _render_set(name: str) -> Rendered:
    return render(values_file(name))


def render_set(name: str) -> Rendered:
    return _render_set(name)


def render_error(values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmError) as err:
        render(values)
    return str(err.value)


def with_(base: str, patch: dict[str, Any]) -> dict[str, Any]:
    """The value set `base` with `patch` merged in (dicts deeply, the rest replaced)."""

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(a)
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merge(out[k], v)
            else:
                out[k] = v
        return out

    return merge(values_file(base), patch)


def secrets_passed(values: dict[str, Any]) -> list[str]:
    """The secret values a value set hands the chart in plain text."""
    found = []
    if values.get("database", {}).get("url"):
        found.append(values["database"]["url"])
    hs = values.get("auth", {}).get("hs256", {}).get("secret")
    if hs:
        found.append(hs)
    return found


# --- lint ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOOD_SETS)
def test_lint_strict(name: str) -> None:
    # strict: warnings count as errors (helm lint --strict).
    report = helm.lint(CHART, values_file(name), strict=True, namespace=NAMESPACE)
    assert report["errors"] == [], report
    assert report["total_charts_linted"] == 1
    assert all(m["severity"] <= 1 for m in report["messages"]), report["messages"]


def test_lint_strict_rejects_unknown_key() -> None:
    report = helm.lint(CHART, values_file("bad-unknown-key"), strict=True)
    assert any("sslMode" in e for e in report["errors"]), report


def test_templates_reference_only_defined_values() -> None:
    """Every .Values path a template reads exists in values.yaml.

    Helm's lint --strict does not render with missingkey=error (Helm 4.2 only lowers the
    tolerance to warnings, and lint mode ignores `fail`), so a misspelt value path would render
    as empty without this check.
    """
    with open(CHART / "values.yaml") as f:
        defaults = yaml.safe_load(f)
    missing = []
    for path in sorted((CHART / "templates").iterdir()):
        for match in re.finditer(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", path.read_text()):
            node: Any = defaults
            for key in match.group(1).strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{path.name}: .Values{match.group(1)}")
                    break
                node = node[key]
    assert missing == []


# --- schema ----------------------------------------------------------------------------------


def load_schema() -> dict[str, Any]:
    with open(CHART / "values.schema.json") as f:
        return json.load(f)


# Objects whose keys are the user's (string maps) or Kubernetes types passed through as they
# are (validated by the API server): the only places additionalProperties is not false.
FREE_FORM = {
    "global",
    "podAnnotations",
    "podLabels",
    "nodeSelector",
    "service.annotations",
    "metrics.service.annotations",
    "metrics.serviceMonitor.labels",
    "serviceAccount.annotations",
    "database.sqlite.persistence.annotations",
    "resources.requests",
    "resources.limits",
    "migrations.resources.requests",
    "migrations.resources.limits",
    "affinity.nodeAffinity",
    "affinity.podAffinity",
    "affinity.podAntiAffinity",
    "#labelSelector.matchLabels",
}


def test_schema_is_closed_at_every_level() -> None:
    schema = load_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    open_objects = []

    def walk(node: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            return
        if node.get("type") == "object" or "properties" in node:
            if node.get("additionalProperties") is not False and path not in FREE_FORM:
                open_objects.append(path)
            for key, sub in node.get("properties", {}).items():
                walk(sub, f"{path}.{key}" if path else key)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    for name, definition in schema.get("definitions", {}).items():
        walk(definition, f"#{name}")
    assert open_objects == []


def test_schema_and_values_yaml_agree() -> None:
    """values.yaml passes the schema, and every key the schema knows has a default."""
    with open(CHART / "values.yaml") as f:
        defaults = yaml.safe_load(f)
    schema = load_schema()
    jsonschema.Draft7Validator(schema).validate(defaults)
    undocumented = []

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            if path == "" and key == "global":
                continue
            if not isinstance(value, dict) or key not in value:
                undocumented.append(f"{path}{key}")
            elif sub.get("additionalProperties") is False and value[key] != {}:
                # ({} defaults, such as resources and affinity, have optional keys.)
                walk(sub, value[key], f"{path}{key}.")

    walk(schema, defaults, "")
    assert undocumented == []


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        (values_file("bad-unknown-key"), "sslMode"),
        (with_("postgres-default", {"replicas": 3}), "replicas"),
        (with_("postgres-default", {"tls": {"enable": True}}), "enable"),
        (with_("postgres-default", {"extraEnv": [{"name": "A", "vaule": "x"}]}), "vaule"),
        (with_("postgres-default", {"networkPolicy": {"grpcFrom": [{"podSelectr": {}}]}}), "podSelectr"),
    ],
    ids=["file", "top-level", "nested", "in-list", "in-definition"],
)
def test_unknown_keys_fail(values: dict[str, Any], needle: str) -> None:
    message = render_error(values)
    assert "additional properties" in message and needle in message, message


@pytest.mark.parametrize(
    "values",
    [
        values_file("bad-wrong-type"),
        with_("postgres-default", {"metrics": {"enabled": "yes"}}),
        with_("postgres-default", {"ports": {"grpc": "50051"}}),
        with_("postgres-default", {"replicaCount": 0}),
        with_("postgres-default", {"database": {"mode": "mysql"}}),
        with_("postgres-default", {"database": {"tls": {"sslmode": "verify"}}}),
        with_("postgres-default", {"shutdown": {"graceSeconds": "20s"}}),
        with_("postgres-default", {"podSecurityContext": {"runAsUser": 0}}),
    ],
    ids=["file", "bool", "port", "replicas-0", "mode", "sslmode", "duration", "root"],
)
def test_wrong_types_and_values_fail(values: dict[str, Any]) -> None:
    message = render_error(values)
    assert "schema" in message, message


def test_validate_schema_api_agrees() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values_file("postgres-default"))
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(values_file("bad-wrong-type"))


# --- rules the templates enforce -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        (values_file("bad-sqlite-replicas"), "exactly one replica"),
        (values_file("bad-no-keys"), "no token keys configured"),
        ({}, "needs the database"),
        (with_("sqlite", {"autoscaling": {"enabled": True}}), "autoscaling.enabled must be false"),
        (with_("sqlite", {"database": {"url": "postgres://x@db/x"}}), "for database.mode=postgres"),
        (with_("sqlite", {"database": {"tls": {"sslmode": "require"}}}), "database.tls is for"),
        (with_("postgres-default", {"database": {"existingSecret": "x"}}), "not both"),
        (with_("postgres-default", {"auth": {"hs256": {"secret": "short"}}}), "at least 32 bytes"),
        (with_("postgres-default", {"auth": {"jwks": {"configMap": "a", "secret": "b"}}}), "not both"),
        (with_("postgres-default", {"auth": {"publicKeys": {"secret": "keys"}}}), "publicKeys.keys"),
        (with_("postgres-default", {"auth": {"publicKeys": {"keys": ["a.pem"]}}}), "publicKeys.keys needs"),
        (with_("postgres-default", {"tls": {"enabled": True}}), "tls.secretName"),
        (with_("postgres-default", {"tls": {"clientCA": {"secretName": "ca"}}}), "needs tls.enabled"),
        (with_("postgres-default", {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}), "needs metrics.enabled"),
        (with_("postgres-default", {"shutdown": {"terminationGracePeriodSeconds": 25}}), "at least"),
        (with_("postgres-default", {"ports": {"health": 50051}}), "must differ"),
        (with_("postgres-default", {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}), "minReplicas"),
    ],
    ids=[
        "sqlite-replicas", "no-keys", "no-database", "sqlite-hpa", "sqlite-url", "sqlite-db-tls",
        "url-and-existing", "short-hs256", "two-jwks", "pubkeys-no-names", "pubkey-names-no-source",
        "tls-no-secret", "mtls-no-tls", "servicemonitor-no-metrics", "grace-too-short",
        "port-clash", "hpa-min-max",
    ],
)
def test_chart_refuses(values: dict[str, Any], needle: str) -> None:
    message = render_error(values)
    assert needle in message, message


@pytest.mark.parametrize(
    "patch",
    [
        {"database": {"url": "mysql://allot:Leaky-Pa55@db/allot"}},
        {"auth": {"hs256": {"secret": "Leaky-Pa55"}}},
    ],
    ids=["url", "hs256"],
)
def test_refusals_do_not_repeat_secrets(patch: dict[str, Any]) -> None:
    message = render_error(with_("postgres-default", patch))
    assert "Leaky-Pa55" not in message, message


# --- Kubernetes validation -------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", GOOD_SETS)
def test_every_object_is_valid_kubernetes(name: str, version: str) -> None:
    rendered = render_set(name)
    assert rendered.objects
    for obj in rendered.objects:
        if obj["kind"] == "ServiceMonitor":
            jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA).validate(obj)
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {path}: {e.message}")
        assert obj["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("name", GOOD_SETS)
def test_names_labels_and_selectors(name: str) -> None:
    r = render_set(name)
    names = [(o["kind"], o["metadata"]["name"]) for o in r.objects]
    assert len(names) == len(set(names)), names
    for o in r.objects:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/name"] == "allot"
        assert labels["helm.sh/chart"] == "allot-0.1.0"
    workload = r.workload()
    selector = workload["spec"]["selector"]["matchLabels"]
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in r.server()["ports"]}
    for svc in r.all("Service"):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, p
    grpc = r.one("Service", FULLNAME)["spec"]["ports"][0]
    assert grpc["name"] == "grpc" and grpc["appProtocol"] == "grpc"


# --- modes and replicas ----------------------------------------------------------------------


def test_postgres_default_is_a_deployment_of_two() -> None:
    r = render_set("postgres-default")
    assert not r.all("StatefulSet")
    deploy = r.one("Deployment", FULLNAME)
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = deploy["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert not any(v.get("persistentVolumeClaim") for v in spec["volumes"])


def test_sqlite_is_one_statefulset_replica_with_a_volume() -> None:
    r = render_set("sqlite")
    assert not r.all("Deployment") and not r.all("Job") and not r.all("HorizontalPodAutoscaler")
    sts = r.one("StatefulSet", FULLNAME)
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == f"{FULLNAME}-headless"
    r.one("Service", f"{FULLNAME}-headless")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    server = r.server()
    assert {"name": "data", "mountPath": "/data"} in server["volumeMounts"]
    env = env_of(server)
    assert env["DATABASE_URL"]["value"] == "sqlite:///data/allot.db?mode=rwc"
    assert env["ALLOT_MIGRATE"]["value"] == "check"
    assert not any(k.startswith("PGSSL") for k in env)
    # The fsGroup makes the volume writable for uid 65532.
    assert sts["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 65532


def test_sqlite_migrates_in_an_init_container() -> None:
    spec = render_set("sqlite").workload()["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["args"] == ["migrate"]
    assert env_of(init)["DATABASE_URL"]["value"] == "sqlite:///data/allot.db?mode=rwc"
    assert {"name": "data", "mountPath": "/data"} in init["volumeMounts"]
    assert spec["containers"][0]["args"] == ["serve"]


def test_storage_class_dash_means_none() -> None:
    r = render(with_("sqlite", {"database": {"sqlite": {"persistence": {"storageClass": "-"}}}}))
    (claim,) = r.workload()["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == ""


def test_hpa_owns_the_replica_count() -> None:
    r = render_set("postgres-full")
    deploy = r.one("Deployment", FULLNAME)
    assert "replicas" not in deploy["spec"]
    hpa = r.one("HorizontalPodAutoscaler", FULLNAME)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}


def test_replica_count_is_passed_through() -> None:
    r = render(with_("postgres-default", {"replicaCount": 5}))
    assert r.one("Deployment")["spec"]["replicas"] == 5


# --- migrations ------------------------------------------------------------------------------


def test_postgres_migration_job_is_a_hook() -> None:
    r = render_set("postgres-default")
    job = r.one("Job", f"{FULLNAME}-migrate")
    notes = annotations(job)
    assert notes["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert set(notes["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (c,) = spec["containers"]
    assert c["args"] == ["migrate"]
    # On a first install the job runs before the release's own Secret and ServiceAccount
    # exist: it reads a hook copy of the URL created just before it, and the default account.
    ref = env_of(c)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    hook_secret = r.one("Secret", ref["name"])
    assert ref["name"] == f"{FULLNAME}-db-migrate"
    secret_notes = annotations(hook_secret)
    assert secret_notes["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret_notes["helm.sh/hook-weight"]) < int(notes["helm.sh/hook-weight"])
    assert "hook-succeeded" in secret_notes["helm.sh/hook-delete-policy"]
    assert "serviceAccountName" not in spec
    assert spec["automountServiceAccountToken"] is False
    # The serving pods never race it.
    assert env_of(r.server())["ALLOT_MIGRATE"]["value"] == "check"
    # The serving pods read the release's ordinary Secret (not a hook: kept across upgrades,
    # removed by uninstall).
    serving_ref = env_of(r.server())["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert serving_ref == {"name": f"{FULLNAME}-db", "key": "DATABASE_URL"}
    assert "helm.sh/hook" not in annotations(r.one("Secret", f"{FULLNAME}-db"))
    # Hooks are only the job and its Secret.
    assert {(o["kind"], o["metadata"]["name"]) for o in r.hooks()} == {
        ("Job", f"{FULLNAME}-migrate"),
        ("Secret", f"{FULLNAME}-db-migrate"),
    }


def test_migration_job_with_an_existing_secret_and_db_tls() -> None:
    r = render_set("postgres-full")
    job = r.one("Job", f"{FULLNAME}-migrate")
    assert [o["kind"] for o in r.hooks()] == ["Job"]
    assert not r.all("Secret")
    spec = job["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = env_of(c)
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "allot-database", "key": "url"}
    assert env["PGSSLMODE"]["value"] == "verify-full"
    assert env["PGSSLROOTCERT"]["value"] == "/etc/allot/db-ca/root.crt"
    assert_db_tls_mounts(spec, c)
    assert c["resources"]["requests"]["cpu"] == "50m"
    assert job["spec"]["backoffLimit"] == 1
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]


def test_without_the_job_pods_migrate_themselves() -> None:
    r = render_set("publickeys-secret")
    assert not r.all("Job") and not r.hooks()
    assert not [s for s in r.all("Secret") if s["metadata"]["name"].endswith("-migrate")]
    assert env_of(r.server())["ALLOT_MIGRATE"]["value"] == "auto"


def test_migration_job_uses_an_existing_service_account() -> None:
    r = render_set("publickeys-secret")
    assert not r.all("ServiceAccount")
    assert r.workload()["spec"]["template"]["spec"]["serviceAccountName"] == "allot-runner"
    r = render(with_("publickeys-secret", {"migrations": {"enabled": True}}))
    assert r.one("Job")["spec"]["template"]["spec"]["serviceAccountName"] == "allot-runner"


# --- database TLS ----------------------------------------------------------------------------


def assert_db_tls_mounts(spec: dict[str, Any], c: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["db-ca"]["secret"]["secretName"] == "db-ca"
    assert volumes["db-client"]["secret"]["secretName"] == "db-client-cert"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["db-ca"]["mountPath"] == "/etc/allot/db-ca"
    assert mounts["db-client"]["mountPath"] == "/etc/allot/db-client"
    env = env_of(c)
    assert env["PGSSLCERT"]["value"] == "/etc/allot/db-client/tls.crt"
    assert env["PGSSLKEY"]["value"] == "/etc/allot/db-client/tls.key"
    for m in mounts.values():
        assert "subPath" not in m


def test_database_tls_reaches_the_server() -> None:
    r = render_set("postgres-full")
    server = r.server()
    env = env_of(server)
    assert env["PGSSLMODE"]["value"] == "verify-full"
    assert env["PGSSLROOTCERT"]["value"] == "/etc/allot/db-ca/root.crt"
    assert_db_tls_mounts(r.workload()["spec"]["template"]["spec"], server)


def test_sslmode_alone_sets_only_pgsslmode() -> None:
    env = env_of(render_set("publickeys-secret").server())
    assert env["PGSSLMODE"]["value"] == "require"
    assert "PGSSLROOTCERT" not in env and "PGSSLCERT" not in env


def test_no_db_tls_env_by_default() -> None:
    env = env_of(render_set("postgres-default").server())
    assert not [k for k in env if k.startswith("PG")]


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOOD_SETS)
def test_no_secret_in_plain_text(name: str) -> None:
    values = values_file(name)
    rendered = render_set(name)
    secrets = secrets_passed(values)
    outside = rendered.text_outside_secrets()
    for secret in secrets:
        assert secret not in outside, f"{secret!r} appears outside a Secret"
        for cm in rendered.all("ConfigMap"):
            assert secret not in json.dumps(cm.get("data", {}))
        for c in all_containers(rendered):
            for e in c.get("env", []):
                assert "value" not in e or secret not in str(e["value"]), (c["name"], e)
    # And the chart-made Secrets do carry them, base64-encoded (not in stringData).
    stored = set()
    for s in rendered.all("Secret"):
        assert "stringData" not in s
        stored |= {base64.b64decode(v).decode() for v in s["data"].values()}
    assert set(secrets) <= stored


@pytest.mark.parametrize("name", GOOD_SETS)
def test_secret_env_comes_from_secret_key_refs(name: str) -> None:
    r = render_set(name)
    postgres = values_file(name).get("database", {}).get("mode", "postgres") == "postgres"
    for c in all_containers(r):
        env = env_of(c)
        for var in ("ALLOT_JWT_HS256_SECRET",) + (("DATABASE_URL",) if postgres else ()):
            if var in env:
                assert set(env[var]) == {"name", "valueFrom"}, env[var]
                ref = env[var]["valueFrom"]["secretKeyRef"]
                assert ref["name"] and ref["key"]
        if postgres:
            assert "DATABASE_URL" in env
    env = env_of(r.server())
    hs256 = values_file(name).get("auth", {}).get("hs256", {})
    if hs256.get("secret"):
        assert env["ALLOT_JWT_HS256_SECRET"]["valueFrom"]["secretKeyRef"] == {
            "name": f"{FULLNAME}-jwt",
            "key": "ALLOT_JWT_HS256_SECRET",
        }
    elif hs256.get("existingSecret"):
        ref = env["ALLOT_JWT_HS256_SECRET"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": hs256["existingSecret"], "key": hs256["existingSecretKey"]}
    else:
        assert "ALLOT_JWT_HS256_SECRET" not in env


def test_secrets_changes_roll_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        pod = render(values).workload()["spec"]["template"]["metadata"]
        return pod["annotations"]["checksum/secrets"]

    base = checksum(values_file("postgres-default"))
    assert base == checksum(values_file("postgres-default"))
    assert base != checksum(with_("postgres-default", {"auth": {"hs256": {"secret": "x" * 40}}}))
    assert base != checksum(with_("postgres-default", {"database": {"url": "postgres://a:b@c/d"}}))


# --- token keys ------------------------------------------------------------------------------


def test_jwks_from_a_config_map() -> None:
    r = render_set("jwks-configmap")
    spec = r.workload()["spec"]["template"]["spec"]
    server = r.server()
    env = env_of(server)
    assert env["ALLOT_JWT_JWKS"]["value"] == "/etc/allot/jwks/jwks.json"
    assert env["ALLOT_JWT_ISSUER"]["value"] == "https://login.example.com/"
    assert "ALLOT_JWT_HS256_SECRET" not in env and "ALLOT_JWT_PUBLIC_KEYS" not in env
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["jwks"]["configMap"]["name"] == "allot-jwks"
    mount = {m["name"]: m for m in server["volumeMounts"]}["jwks"]
    assert mount["mountPath"] == "/etc/allot/jwks" and "subPath" not in mount
    assert not r.all("Secret") or all(s["metadata"]["name"].startswith(f"{FULLNAME}-db") for s in r.all("Secret"))


def test_jwks_from_a_secret() -> None:
    r = render_set("postgres-full")
    volumes = {v["name"]: v for v in r.workload()["spec"]["template"]["spec"]["volumes"]}
    assert volumes["jwks"]["secret"]["secretName"] == "allot-jwks"
    assert env_of(r.server())["ALLOT_JWT_JWKS"]["value"] == "/etc/allot/jwks/keys.json"


def test_public_keys_from_a_secret() -> None:
    r = render_set("publickeys-secret")
    env = env_of(r.server())
    assert env["ALLOT_JWT_PUBLIC_KEYS"]["value"] == (
        "/etc/allot/public-keys/issuer-2025.pem,/etc/allot/public-keys/issuer-2026.pem"
    )
    volumes = {v["name"]: v for v in r.workload()["spec"]["template"]["spec"]["volumes"]}
    assert volumes["public-keys"]["secret"]["secretName"] == "allot-issuer-keys"
    mount = {m["name"]: m for m in r.server()["volumeMounts"]}["public-keys"]
    assert mount["mountPath"] == "/etc/allot/public-keys" and "subPath" not in mount


def test_public_keys_from_a_config_map() -> None:
    values = with_("publickeys-secret", {"auth": {"publicKeys": {"secret": "", "configMap": "pems"}}})
    volumes = {v["name"]: v for v in render(values).workload()["spec"]["template"]["spec"]["volumes"]}
    assert volumes["public-keys"]["configMap"]["name"] == "pems"


# --- probes, shutdown, security --------------------------------------------------------------


@pytest.mark.parametrize("name", GOOD_SETS)
def test_grpc_probes(name: str) -> None:
    values = values_file(name)
    server = render_set(name).server()
    env = env_of(server)
    tls = values.get("tls", {}).get("enabled", False)
    grpc_port = values.get("ports", {}).get("grpc", 50051)
    health_port = values.get("ports", {}).get("health", 8081)
    port = health_port if tls else grpc_port
    assert env["ALLOT_LISTEN"]["value"] == f"0.0.0.0:{grpc_port}"
    readiness, liveness, startup = (server[k] for k in ("readinessProbe", "livenessProbe", "startupProbe"))
    # Readiness: the overall health ("" service: database, ledger, background work).
    assert readiness["grpc"]["port"] == port
    assert readiness["grpc"].get("service", "") == ""
    # Liveness and startup: "liveness" (the process), so a database outage restarts nothing.
    assert liveness["grpc"] == {"port": port, "service": "liveness"}
    assert startup["grpc"] == {"port": port, "service": "liveness"}
    for probe in (readiness, liveness, startup):
        assert set(probe) & {"httpGet", "exec", "tcpSocket"} == set()
    if tls:
        assert env["ALLOT_HEALTH_LISTEN"]["value"] == f"0.0.0.0:{health_port}"
        assert {"name": "health", "containerPort": health_port, "protocol": "TCP"} in server["ports"]
    else:
        assert "ALLOT_HEALTH_LISTEN" not in env


def duration_seconds(text: str) -> int:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return int(match.group(1))


@pytest.mark.parametrize("name", GOOD_SETS)
def test_shutdown_fits_the_grace_period(name: str) -> None:
    workload = render_set(name).workload()
    spec = workload["spec"]["template"]["spec"]
    server = container(spec, SERVER_CONTAINER)
    pre_stop = server["lifecycle"]["preStop"]
    assert set(pre_stop) == {"sleep"}, "the distroless image has no shell: native sleep only"
    sleep = pre_stop["sleep"]["seconds"]
    grace = duration_seconds(env_of(server)["ALLOT_SHUTDOWN_GRACE"]["value"])
    assert sleep > 0
    assert spec["terminationGracePeriodSeconds"] >= sleep + grace + 5


def test_shutdown_defaults_and_computed_grace_period() -> None:
    server_spec = render_set("postgres-default").workload()["spec"]["template"]["spec"]
    server = container(server_spec, SERVER_CONTAINER)
    assert server["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
    assert env_of(server)["ALLOT_SHUTDOWN_GRACE"]["value"] == "20s"
    assert server_spec["terminationGracePeriodSeconds"] == 35
    spec = render(with_("postgres-default", {"shutdown": {"graceSeconds": 50}})).workload()["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 65
    full = render_set("postgres-full").workload()["spec"]["template"]["spec"]
    assert full["terminationGracePeriodSeconds"] == 60
    no_sleep = render(with_("postgres-default", {"shutdown": {"preStopSleepSeconds": 0}}))
    assert "lifecycle" not in no_sleep.server()


@pytest.mark.parametrize("name", GOOD_SETS)
def test_security_contexts(name: str) -> None:
    r = render_set(name)
    specs = pod_specs(r)
    assert specs
    for spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == 65532 and pod["runAsGroup"] == 65532
        assert pod["fsGroup"] == 65532
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert not spec.get("hostNetwork") and not spec.get("hostPID")
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"]
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["runAsUser"] == 65532 and sc["runAsGroup"] == 65532
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["privileged"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    for sa in r.all("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


def test_ids_can_be_left_to_the_platform() -> None:
    values = with_("postgres-default", {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}})
    spec = render(values).workload()["spec"]["template"]["spec"]
    assert "runAsUser" not in spec["securityContext"] and "fsGroup" not in spec["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    sc = spec["containers"][0]["securityContext"]
    assert "runAsUser" not in sc and sc["runAsNonRoot"] is True


# --- TLS on the gRPC port --------------------------------------------------------------------


def test_tls_and_mtls() -> None:
    r = render_set("postgres-full")
    spec = r.workload()["spec"]["template"]["spec"]
    server = r.server()
    env = env_of(server)
    assert env["ALLOT_TLS_CERT"]["value"] == "/etc/allot/tls/tls.crt"
    assert env["ALLOT_TLS_KEY"]["value"] == "/etc/allot/tls/tls.key"
    assert env["ALLOT_TLS_CLIENT_CA"]["value"] == "/etc/allot/client-ca/ca.crt"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "allot-grpc-tls"
    assert volumes["client-ca"]["secret"]["secretName"] == "allot-client-ca"
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    # Whole-directory mounts: kubelet swaps renewed files in, allot reloads them.
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/allot/tls", "readOnly": True}
    assert mounts["client-ca"] == {"name": "client-ca", "mountPath": "/etc/allot/client-ca", "readOnly": True}


def test_no_tls_by_default() -> None:
    env = env_of(render_set("postgres-default").server())
    assert not [k for k in env if k.startswith("ALLOT_TLS")]


# --- environment -----------------------------------------------------------------------------


def test_server_environment_defaults() -> None:
    env = env_of(render_set("postgres-default").server())
    plain = {k: v["value"] for k, v in env.items() if "value" in v}
    assert plain == {
        "ALLOT_LISTEN": "0.0.0.0:50051",
        "ALLOT_MIGRATE": "check",
        "ALLOT_SHUTDOWN_GRACE": "20s",
        "ALLOT_JWT_ISSUER": "allot",
        "ALLOT_JWT_AUDIENCE": "allot",
        "ALLOT_METRICS_LISTEN": "0.0.0.0:9090",
        "ALLOT_LOG_JSON": "true",
        "RUST_LOG": "info",
        "ALLOT_ACCESS_LOG_RATE": "100",
    }


def test_full_environment() -> None:
    r = render_set("postgres-full")
    env = env_of(r.server())
    assert env["ALLOT_ACCESS_LOG_RATE"]["value"] == "0"
    assert "ALLOT_LOG_JSON" not in env
    assert env["RUST_LOG"]["value"] == "info,allot=debug"
    assert env["ALLOT_MAX_HOLD_TTL"]["value"] == "12h"
    assert env["ALLOT_SWEEP_INTERVAL"]["value"] == "2s"
    assert env["ALLOT_IDEMPOTENCY_RETENTION"]["value"] == "7d"
    assert env["ALLOT_EVENT_RETENTION"]["value"] == "14d"
    assert env["ALLOT_WEBHOOK_ALLOW_PRIVATE"]["value"] == "true"
    assert env["ALLOT_WEBHOOK_TIMEOUT"]["value"] == "5s"
    assert env["ALLOT_WEBHOOK_RETRY_SCHEDULE"]["value"] == "10s,1m,1h,1d"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability:4317"
    assert env["OTEL_SERVICE_NAME"]["value"] == "allot"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"]["name"] == "otel-auth"
    assert env["ALLOT_JWT_AUDIENCE"]["value"] == "allot-prod"
    server = r.server()
    assert server["image"] == "registry.example/platform/allot:0.1.0@sha256:" + "0" * 64
    assert server["imagePullPolicy"] == "Always"
    assert server["resources"]["limits"]["memory"] == "1Gi"


def test_image_defaults_to_app_version() -> None:
    assert render_set("postgres-default").server()["image"] == "allot:0.1.0"


def test_scheduling_options() -> None:
    r = render_set("postgres-full")
    spec = r.workload()["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "podAntiAffinity" in spec["affinity"]
    assert spec["priorityClassName"] == "business-critical"
    (tsc,) = spec["topologySpreadConstraints"]
    # A constraint without a selector gets the serving pods' labels.
    assert tsc["labelSelector"]["matchLabels"] == r.workload()["spec"]["selector"]["matchLabels"]
    meta = r.workload()["spec"]["template"]["metadata"]
    assert meta["annotations"]["example.com/team"] == "billing"
    assert meta["labels"]["tier"] == "backend"
    sa = r.one("ServiceAccount", FULLNAME)
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam")
    assert spec["serviceAccountName"] == FULLNAME


# --- services, metrics and optional objects --------------------------------------------------


def test_services_and_metrics() -> None:
    r = render_set("postgres-default")
    assert env_of(r.server())["ALLOT_METRICS_LISTEN"]["value"] == "0.0.0.0:9090"
    metrics = r.one("Service", f"{FULLNAME}-metrics")
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP", "appProtocol": "http"}
    ]
    grpc = r.one("Service", FULLNAME)
    assert grpc["spec"]["type"] == "ClusterIP"
    assert grpc["spec"]["ports"][0]["port"] == 50051
    assert r.one("Service", f"{FULLNAME}-headless")["spec"]["clusterIP"] == "None"
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy", "ConfigMap"):
        assert not r.all(kind), kind


def test_metrics_off() -> None:
    r = render_set("jwks-configmap")
    assert "ALLOT_METRICS_LISTEN" not in env_of(r.server())
    assert [s["metadata"]["name"] for s in r.all("Service")] == [FULLNAME]
    assert "metrics" not in {p["name"] for p in r.server()["ports"]}


def test_optional_objects() -> None:
    r = render_set("postgres-full")
    selector = r.workload()["spec"]["selector"]["matchLabels"]
    pdb = r.one("PodDisruptionBudget", FULLNAME)
    assert pdb["spec"] == {"minAvailable": 2, "selector": {"matchLabels": selector}}
    sm = r.one("ServiceMonitor", FULLNAME)
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    metrics_svc = r.one("Service", f"{FULLNAME}-metrics")
    assert sm["spec"]["selector"]["matchLabels"].items() <= metrics_svc["metadata"]["labels"].items()
    # ... and only the metrics Service.
    for svc in r.all("Service"):
        if svc is not metrics_svc:
            assert not sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["interval"] == "15s"
    grpc = r.one("Service", FULLNAME)
    assert grpc["spec"]["type"] == "LoadBalancer" and grpc["spec"]["ports"][0]["port"] == 443
    assert grpc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-internal"] == "true"


def test_network_policy() -> None:
    r = render_set("postgres-full")
    np = r.one("NetworkPolicy", FULLNAME)
    assert np["spec"]["podSelector"]["matchLabels"] == r.workload()["spec"]["selector"]["matchLabels"]
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    rules = {rule["ports"][0]["port"]: rule for rule in np["spec"]["ingress"]}
    assert set(rules) == {"grpc", "metrics", "health"}
    assert rules["grpc"]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "product"}
    assert rules["metrics"]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert "from" not in rules["health"]  # [] admits every source (the kubelet)
    named = {p["name"] for p in r.server()["ports"]}
    assert set(rules) <= named
    egress = np["spec"]["egress"]
    assert {p["port"] for p in egress[0]["ports"]} == {53}
    assert egress[1]["to"][0]["ipBlock"]["cidr"] == "10.20.0.0/16"
    assert len(egress) == 3


def test_network_policy_without_egress_rules() -> None:
    np = render(with_("postgres-default", {"networkPolicy": {"enabled": True}})).one("NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in np["spec"]
    assert all("from" not in rule for rule in np["spec"]["ingress"])


def test_pdb_max_unavailable_default() -> None:
    pdb = render(with_("postgres-default", {"podDisruptionBudget": {"enabled": True}})).one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]


# --- NOTES.txt -------------------------------------------------------------------------------


def test_notes_with_hs256() -> None:
    notes = render_set("postgres-default").notes
    assert f"kubectl -n {NAMESPACE} exec deploy/{FULLNAME} -c allot -- allot token --role admin --account '*'" in notes
    assert f"port-forward svc/{FULLNAME} 50051:50051" in notes
    assert "allot --server http://127.0.0.1:50051 --token \"$ALLOT_TOKEN\" accounts list" in notes
    assert "grpcurl -plaintext" in notes
    assert "identity provider" not in notes


def test_notes_sqlite() -> None:
    notes = render_set("sqlite").notes
    assert f"exec statefulset/{FULLNAME} -c allot -- allot token" in notes
    assert "one replica" in notes


def test_notes_without_hs256() -> None:
    notes = render_set("jwks-configmap").notes
    assert "allot token" not in notes
    assert "identity provider" in notes
    assert "iss=https://login.example.com/" in notes


def test_notes_with_tls() -> None:
    notes = render_set("postgres-full").notes
    assert "--server https://" in notes and "--tls-ca ca.crt" in notes
    assert "--tls-client-cert client.crt --tls-client-key client.key" in notes
    assert "grpcurl -cacert ca.crt -cert client.crt -key client.key" in notes
    assert "-plaintext" not in notes
    assert f"port-forward svc/{FULLNAME} 50051:443" in notes
    assert f"exec deploy/{FULLNAME} -c allot -- allot token" in notes


# ---- the operations guide's examples -------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"


def doc_values_files() -> dict[str, str]:
    """The `values-*.yaml` examples of docs/OPERATIONS.md: a line naming the file, then a
    fenced yaml block."""
    text = DOC.read_text()
    found = dict(re.findall(r"`(values-[a-z-]+\.yaml)`:\s*\n\s*\n```yaml\n(.*?)```", text, re.S))
    return found


def test_the_operations_guide_has_examples_for_both_modes() -> None:
    assert set(doc_values_files()) >= {"values-postgres.yaml", "values-sqlite.yaml"}


@pytest.mark.parametrize("name", sorted(doc_values_files()))
def test_the_operations_guides_values_files_render(name: str) -> None:
    values = yaml.safe_load(doc_values_files()[name])
    # The guide names Secrets it asks the reader to create; the PostgreSQL example points at
    # an existing URL Secret, the SQLite one needs nothing more.
    rendered = render(values)
    kinds = {o["kind"] for o in rendered.objects}
    workload = "StatefulSet" if values["database"]["mode"] == "sqlite" else "Deployment"
    assert workload in kinds
