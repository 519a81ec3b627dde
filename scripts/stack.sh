#!/usr/bin/env bash
# The whole local stack creditwatch needs: Redis and a single-node Kafka (KRaft).
#
#   scripts/stack.sh up       install/fetch what is missing, start both, wait until ready (idempotent)
#   scripts/stack.sh down     stop both (and a worker started by scripts/worker.sh, if any)
#   scripts/stack.sh status   exit 0 if both run, 3 otherwise
#   scripts/stack.sh reset    down, then delete the Kafka and Redis data in the run dir
#
# Same environment as scripts/kafka.sh and scripts/redis.sh:
#   CREDITWATCH_KAFKA_PORT [19092], CREDITWATCH_KAFKA_CONTROLLER_PORT [19093],
#   CREDITWATCH_REDIS_PORT [16379], CREDITWATCH_RUN_DIR [<repo>/.run],
#   CREDITWATCH_CACHE [${XDG_CACHE_HOME:-$HOME/.cache}/creditwatch], CREDITWATCH_KAFKA_VERSION [3.9.1]
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)

KAFKA_PORT=${CREDITWATCH_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${CREDITWATCH_KAFKA_CONTROLLER_PORT:-19093}
REDIS_PORT=${CREDITWATCH_REDIS_PORT:-16379}
RUN_DIR=${CREDITWATCH_RUN_DIR:-$REPO_ROOT/.run}
case $RUN_DIR in /*) ;; *) RUN_DIR=$PWD/$RUN_DIR ;; esac

say() { printf 'stack.sh: %s\n' "$*"; }
die() { printf 'stack.sh: error: %s\n' "$*" >&2; exit 1; }

kafka() { bash "$SCRIPT_DIR/kafka.sh" "$@"; }
redis() { bash "$SCRIPT_DIR/redis.sh" "$@"; }

cmd_up() {
    local t0=$SECONDS
    redis install || die "could not install redis-server"
    redis start || die "could not start redis"
    kafka fetch || die "could not fetch Kafka"
    kafka start || die "could not start Kafka"
    local bootstrap=127.0.0.1:$KAFKA_PORT redis_url=redis://127.0.0.1:$REDIS_PORT/0
    cat <<EOF

creditwatch local stack is up ($((SECONDS - t0))s):
  Kafka   bootstrap servers $bootstrap (KRaft controller on 127.0.0.1:$KAFKA_CONTROLLER_PORT)
          log  $RUN_DIR/kafka/logs/server.log
          data $RUN_DIR/kafka/data
  Redis   $redis_url
          log  $RUN_DIR/redis/redis.log
          data $RUN_DIR/redis
EOF
    if [[ $bootstrap != 127.0.0.1:19092 || $redis_url != redis://127.0.0.1:16379/0 ]]; then
        cat <<EOF
  The worker's defaults point elsewhere; export:
    export CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS=$bootstrap
    export CREDITWATCH_REDIS__URL=$redis_url
EOF
    else
        echo "  (these are the worker's default settings: nothing to export)"
    fi
    echo "  Stop with: bash scripts/stack.sh down"
}

cmd_down() {
    local rc=0
    # A worker started by scripts/worker.sh (pidfile in the same run dir) goes first,
    # while Kafka and Redis are still there for its last commits.
    if [[ -f $SCRIPT_DIR/worker.sh ]]; then
        bash "$SCRIPT_DIR/worker.sh" stop || rc=1
    fi
    kafka stop || rc=1
    redis stop || rc=1
    if ((rc == 0)); then say "stack is down"; else die "something did not stop (see above)"; fi
}

cmd_reset() {
    cmd_down
    # Only the data of this run dir: topics, offsets and Redis state start empty.
    rm -rf "$RUN_DIR/kafka/data" "$RUN_DIR/redis/appendonlydir" "$RUN_DIR/redis/dump.rdb"
    say "data removed from $RUN_DIR (jars stay cached)"
}

cmd_status() {
    local rc=0
    kafka status || rc=3
    redis status || rc=3
    if [[ -f $SCRIPT_DIR/worker.sh ]]; then
        bash "$SCRIPT_DIR/worker.sh" status || true # informational: the stack is Kafka + Redis
    fi
    return "$rc"
}

case ${1:-} in
    up) cmd_up ;;
    reset) cmd_reset ;;
    down) cmd_down ;;
    status) cmd_status ;;
    -h | --help | help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *)
        sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
