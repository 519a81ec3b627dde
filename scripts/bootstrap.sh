#!/usr/bin/env bash
# Sets up a fresh machine for creditwatch: the virtualenv with the project and
# its dev tools, Debian's redis-server and prometheus (promtool), and the Kafka jars (cached).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating virtualenv .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.creditwatch-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing the project and its dependencies into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  echo "$want" > "$stamp"
fi

bash scripts/redis.sh install
bash scripts/prometheus.sh install
bash scripts/kafka.sh fetch
echo "bootstrap: ready"
