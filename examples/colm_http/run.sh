#!/usr/bin/env bash
# CoLM over HTTP on one machine: a server process and three client processes, each with its own model.
# Usage: examples/colm_http/run.sh [OUT_DIR]     (needs `moco` on PATH, e.g. source .venv/bin/activate)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-runs/colm_http}"
mkdir -p "$out"
export MOCO_SERVE_TOKEN="${MOCO_SERVE_TOKEN:-colm-demo-token}"
moco serve --role colm-server "$here/server.yaml" --port 8765 --expect 3 > "$out/server.log" 2>&1 &
server=$!
trap 'kill $server' EXIT
until curl -sf http://127.0.0.1:8765/health > /dev/null; do sleep 1; done
pids=()
for c in math geography science; do
  moco run "$here/client_$c.yaml" --out "$out/$c" --no-progress > "$out/$c.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
tail -n 2 "$out"/*.log
