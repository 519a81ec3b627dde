#!/usr/bin/env bash
# The newcomer's one command: set everything up, start Kafka and Redis, create
# the topics, simulate a small loan book, run the worker over it and show the
# early warnings it raised. Stop everything afterwards with:
#   bash scripts/stack.sh down
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUN_DIR="${CREDITWATCH_RUN_DIR:-$ROOT/.run}"
CUSTOMERS="${DEMO_CUSTOMERS:-200}"
HTTP_PORT="${CREDITWATCH_HTTP_PORT:-6066}"
export CREDITWATCH_HTTP_PORT="$HTTP_PORT"
# The Python side reads its own settings; point them at the stack the scripts start.
export CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS="${CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS:-127.0.0.1:${CREDITWATCH_KAFKA_PORT:-19092}}"
export CREDITWATCH_REDIS__URL="${CREDITWATCH_REDIS__URL:-redis://127.0.0.1:${CREDITWATCH_REDIS_PORT:-16379}/0}"
export CREDITWATCH_DPD_TICK_SECONDS="${CREDITWATCH_DPD_TICK_SECONDS:-2}"

bash scripts/bootstrap.sh
# Each demo starts from an empty stack, so a rerun shows the same story.
bash scripts/stack.sh reset
bash scripts/stack.sh up
CW=.venv/bin/creditwatch

echo "== creating topics"
$CW topics create

echo "== simulating a loan book of $CUSTOMERS customers"
mkdir -p "$RUN_DIR/demo"
$CW simulate --customers "$CUSTOMERS" --seed 7 --out "$RUN_DIR/demo/events.jsonl"

echo "== starting the worker (log: $RUN_DIR/worker.log)"
bash scripts/worker.sh restart

echo "== publishing the events and waiting for the worker to process them"
.venv/bin/python scripts/demo_wait.py --events "$RUN_DIR/demo/events.jsonl" --port "$HTTP_PORT"

echo "== the early warnings the worker raised"
$CW alerts show --limit 15
echo "== the riskiest customers"
$CW state top --n 10
cat <<MSG

The worker is still running:
  metrics   http://127.0.0.1:$HTTP_PORT/metrics
  health    http://127.0.0.1:$HTTP_PORT/healthz
  a customer: .venv/bin/creditwatch state show <customer id>
  the same events without Kafka: .venv/bin/creditwatch replay $RUN_DIR/demo/events.jsonl --out $RUN_DIR/demo/replay
Stop the worker, Kafka and Redis with:  bash scripts/stack.sh down
MSG
