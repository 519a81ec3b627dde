#!/usr/bin/env bash
# Runs the whole test suite: lint, schema freshness, unit, integration (against
# a real Kafka and Redis that the tests start on free ports) and end-to-end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/bootstrap.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== JSON Schemas up to date"
.venv/bin/python -m schemas.generate --check
echo "== pytest"
set +e
.venv/bin/pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing the run" >&2
  exit 1
fi
exit "$status"
