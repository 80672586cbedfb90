#!/usr/bin/env bash
# Both block families end to end (docs/oss.md, "The whole zoo"): train every canonical depth (1/4/6/12) of the gpt2
# block and of the oss block, export them all, serve both families from one store, route within each (by name, by
# family, by latency budget) and draft (a shallow variant proposes tokens for a deep one, within and across
# families). Everything lands in $GPTZOO_HOME. TRAIN=0 skips training and uses the variants already in the store.
set -euo pipefail
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8766}
TRAIN=${TRAIN:-1}
if [ "$TRAIN" = 1 ]; then
  "$BIN/gptzoo" data prepare shakespeare_char
  "$BIN/gptzoo" train --all --preset cpu --overwrite
  # the oss block compiled: its many small elementwise ops fused (a step ~1.1x gpt2's instead of ~1.6x eager)
  "$BIN/gptzoo" train --all --preset cpu --arch oss --compile --overwrite
fi
"$BIN/gptzoo" export --all
"$BIN/gptzoo" zoo list
# 12 layers drafted by 1 layer in each family; the gpt2 6-layer variant drafted by the oss 1-layer one (one tokenizer)
"$BIN/gptzoo" serve --port "$PORT" --log-level warning --draft 12l=1l --draft 12l-oss=1l-oss --draft 6l=1l-oss &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.5
done
ask() {  # a completion; prints who answered, the route taken, the usage and the text's start
  curl -sf -D /tmp/gptzoo-two-families.h "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
    -d "$1" | "$BIN/python" -c 'import json, sys; r = json.load(sys.stdin); print(r["model"], r["usage"], repr(r["choices"][0]["text"][:60]))'
  grep -i '^x-gptzoo-route' /tmp/gptzoo-two-families.h || true
}
echo "--- /v1/models ---"
curl -sf "http://127.0.0.1:$PORT/v1/models" | "$BIN/python" -c 'import json, sys; [print(m["id"]) for m in json.load(sys.stdin)["data"]]'
for body in \
  '{"model": "12l-oss", "prompt": "ROMEO:", "max_tokens": 300, "temperature": 0}' \
  '{"model": "12l", "prompt": "ROMEO:", "max_tokens": 300, "temperature": 0}' \
  '{"model": "6l", "prompt": "ROMEO:", "max_tokens": 100, "temperature": 0}' \
  '{"model": "shakespeare-char-oss", "prompt": "JULIET:", "max_tokens": 50}' \
  '{"model": "shakespeare-char-oss", "prompt": "JULIET:", "max_tokens": 50, "max_tpot_ms": 0.5}' \
  '{"model": "auto", "prompt": "JULIET:", "max_tokens": 50, "max_tpot_ms": 100}'; do
  echo "--- $body"
  ask "$body"
done
echo "--- drafting: tokens drafted and accepted per target ---"
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^gptzoo_spec_(draft|accepted)_tokens_total' || true
