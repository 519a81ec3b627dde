#!/usr/bin/env bash
# Runs `creditwatch worker` in the background for the local stack.
#   scripts/worker.sh start | stop | restart | status
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${CREDITWATCH_RUN_DIR:-$ROOT/.run}"
PIDFILE="$RUN_DIR/worker.pid"
LOG="$RUN_DIR/worker.log"
PORT="${CREDITWATCH_HTTP_PORT:-6066}"

running() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null || return 1
  # an exited process nobody reaped still answers kill -0: it is not running
  ! grep -q "^State:[[:space:]]*Z" "/proc/$pid/status" 2>/dev/null
}

start() {
  if running; then echo "worker.sh: already running (pid $(cat "$PIDFILE"))"; return 0; fi
  mkdir -p "$RUN_DIR"
  cd "$ROOT"
  nohup .venv/bin/creditwatch worker >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 180); do
    if curl -fsS "http://127.0.0.1:$PORT/healthz" 2>/dev/null | grep -q '"assigned_partitions":\[[0-9]'; then
      echo "worker.sh: worker ready on http://127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
      return 0
    fi
    if ! running; then echo "worker.sh: worker exited; last lines of $LOG:" >&2; tail -n 30 "$LOG" >&2; exit 1; fi
    sleep 0.5
  done
  echo "worker.sh: worker not ready after 90s; last lines of $LOG:" >&2
  tail -n 30 "$LOG" >&2
  exit 1
}

stop() {
  if ! running; then rm -f "$PIDFILE"; echo "worker.sh: not running"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
  echo "worker.sh: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running; then echo "worker.sh: running (pid $(cat "$PIDFILE"))"; else echo "worker.sh: not running"; exit 3; fi ;;
  *) echo "usage: scripts/worker.sh start|stop|restart|status" >&2; exit 2 ;;
esac
