#!/usr/bin/env bash
# The main job on a fresh machine: install, find a broker, start a worker, make the sample
# models, submit the sample request, print its events and a side-by-side summary, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh
BW=.venv/bin/benchmark-worker
DEMO=${DEMO_DIR:-$PWD/demo}
rm -rf "$DEMO" && mkdir -p "$DEMO"

echo "== making the sample models in $DEMO/samples"
REQUEST=$($BW sample-models "$DEMO/samples" 2>"$DEMO/sample-models.log")
EVENTS="$DEMO/events.jsonl"

if URL=$(.venv/bin/python -m service.tools.devbroker); then
  export AMQP_URL="$URL"
  echo "== starting a worker (log: $DEMO/worker.log)"
  $BW run --allowed-root "$DEMO" --workspace "$DEMO/workspace" >"$DEMO/worker.log" 2>&1 &
  WORKER=$!
  trap 'kill -TERM $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true' EXIT
  echo "== submitting $REQUEST; events as they arrive:"
  status=0
  $BW submit "$REQUEST" --wait --timeout 600 | tee "$EVENTS" || status=$?
else
  echo "== no broker: running the same request with 'bench' (no broker) instead"
  status=0
  $BW bench "$REQUEST" --allowed-root "$DEMO" --workspace "$DEMO/workspace" | tee "$EVENTS" || status=$?
fi
echo
echo "== summary"
.venv/bin/python -m service.tools.summary "$EVENTS" || true
exit $status
