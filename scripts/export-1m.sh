#!/usr/bin/env bash
# 1M ledger entries on SQLite, then `allot export` of all of them: server and client memory.
set -euo pipefail
BIN=$(cd "$(dirname "$0")/.." && pwd)/target/release/allot
D=/tmp/export1m; rm -rf $D; mkdir -p $D; cd $D
PORT=50888
start() { "$BIN" serve --dev --listen 127.0.0.1:$PORT > serve$1.log 2>&1 & echo $! > pid
  for _ in $(seq 1 100); do grep -q "ALLOT_TOKEN=" serve$1.log 2>/dev/null && break; sleep 0.2; done; }
start 1
export ALLOT_TOKEN=$(grep -o 'ALLOT_TOKEN=[^ ]*' serve1.log | head -1 | cut -d= -f2)
export ALLOT_SERVER=http://127.0.0.1:$PORT
"$BIN" bench --server $ALLOT_SERVER --token "$ALLOT_TOKEN" --wallets 100 --batch 100 --concurrency 16 --duration 115s --no-baseline 2>&1 | grep -E "^allot|acknowledged" 
kill -TERM $(cat pid); sleep 3
start 2
echo "server before export: $(grep -E 'VmRSS' /proc/$(cat pid)/status)"
/usr/bin/time -v "$BIN" export --csv $D/ledger.csv 2> time.txt || { cat time.txt; exit 1; }
grep -E "entries written|Maximum resident|Elapsed" time.txt
echo "server after export: $(grep -E 'VmRSS|VmHWM' /proc/$(cat pid)/status | tr '\n' ' ')"
echo "csv: $(wc -l < $D/ledger.csv) lines, $(du -h $D/ledger.csv | cut -f1)"
/usr/bin/time -v "$BIN" export --json --csv $D/ledger.jsonl 2> time2.txt
grep -E "entries written|Maximum resident|Elapsed" time2.txt
kill -TERM $(cat pid)
