#!/usr/bin/env bash
# The main job end to end: data -> train 4 layers -> eval -> export (+int8) -> generate -> serve -> HTTP completion.
# Run through `make demo`, which installs first; everything lands in $GPTZOO_HOME (./demo by default).
set -euo pipefail
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8765}
"$BIN/gptzoo" data prepare shakespeare_char
"$BIN/gptzoo" train --layers 4 --preset cpu --overwrite
"$BIN/gptzoo" eval --layers 4
"$BIN/gptzoo" export --layers 4 --quantize int8
"$BIN/gptzoo" generate --layers 4 --prompt "ROMEO:" --max-tokens 200 --seed 1
"$BIN/gptzoo" zoo list
"$BIN/gptzoo" serve --port "$PORT" --log-level warning &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.5
done
echo "--- POST /v1/completions (model 4l) ---"
curl -sf "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "4l", "prompt": "JULIET:", "max_tokens": 120, "temperature": 0.8, "seed": 7}'
echo
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^gptzoo_(model_validation_loss|generation_tokens_total)' || true
