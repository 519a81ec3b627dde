#!/usr/bin/env bash
# Fetch, start, stop a local single-node Apache Kafka broker (KRaft, combined
# broker+controller) from Maven Central jars. No Docker, no ZooKeeper.
#
#   scripts/kafka.sh fetch    download the broker jars once into the cache (needs mvn + java)
#   scripts/kafka.sh start    format storage (first time) and start in the background; waits until ready
#   scripts/kafka.sh stop     SIGTERM, wait, SIGKILL fallback
#   scripts/kafka.sh status   exit 0 if running, 3 if not
#   scripts/kafka.sh restart
#
# Environment (all optional):
#   CREDITWATCH_KAFKA_PORT             client (PLAINTEXT) port on 127.0.0.1     [19092]
#   CREDITWATCH_KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1       [19093]
#   CREDITWATCH_RUN_DIR                state root: kafka/{data,logs,kafka.pid}  [<repo>/.run]
#   CREDITWATCH_KAFKA_VERSION          Kafka version fetched from Maven Central [3.9.1]
#   CREDITWATCH_CACHE                  jar cache root [${XDG_CACHE_HOME:-$HOME/.cache}/creditwatch]
#   CREDITWATCH_KAFKA_HEAP_OPTS        [-Xms256m -Xmx768m]
#   CREDITWATCH_KAFKA_START_TIMEOUT    seconds to wait for readiness            [90]
#   CREDITWATCH_KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM            [30]
#   CREDITWATCH_MAVEN_ARGS             extra mvn arguments (e.g. "-s my-settings.xml")
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)

KAFKA_VERSION=${CREDITWATCH_KAFKA_VERSION:-3.9.1}
CACHE_ROOT=${CREDITWATCH_CACHE:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/creditwatch}
KAFKA_HOME=$CACHE_ROOT/kafka-$KAFKA_VERSION
LIBS=$KAFKA_HOME/libs
STAMP=$KAFKA_HOME/.fetch-complete
POM=$REPO_ROOT/deploy/kafka/pom.xml
LOG4J=$REPO_ROOT/deploy/kafka/log4j.properties

HOST=127.0.0.1
PORT=${CREDITWATCH_KAFKA_PORT:-19092}
CONTROLLER_PORT=${CREDITWATCH_KAFKA_CONTROLLER_PORT:-19093}
RUN_DIR=${CREDITWATCH_RUN_DIR:-$REPO_ROOT/.run}
case $RUN_DIR in /*) ;; *) RUN_DIR=$PWD/$RUN_DIR ;; esac
KDIR=$RUN_DIR/kafka
DATA_DIR=$KDIR/data
LOG_DIR=$KDIR/logs
PIDFILE=$KDIR/kafka.pid
PROPS=$KDIR/server.properties
CLUSTER_ID_FILE=$KDIR/cluster.id

HEAP_OPTS=${CREDITWATCH_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}
START_TIMEOUT=${CREDITWATCH_KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${CREDITWATCH_KAFKA_STOP_TIMEOUT:-30}

say() { printf 'kafka.sh: %s\n' "$*"; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit 1; }

valid_port() { [[ $1 =~ ^[0-9]+$ ]] && ((1 <= 10#$1 && 10#$1 <= 65535)); }

check_ports() {
    valid_port "$PORT" || die "CREDITWATCH_KAFKA_PORT='$PORT' is not a port number"
    valid_port "$CONTROLLER_PORT" || die "CREDITWATCH_KAFKA_CONTROLLER_PORT='$CONTROLLER_PORT' is not a port number"
    [[ $PORT != "$CONTROLLER_PORT" ]] || die "CREDITWATCH_KAFKA_PORT and CREDITWATCH_KAFKA_CONTROLLER_PORT must differ (both $PORT)"
}

# True if something accepts TCP connections on $1:$2.
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }

# True if $1 is a live Kafka process started with this run dir's server.properties.
is_ours() {
    local pid=$1 cmd
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmd == *"kafka.Kafka $PROPS"* ]]
}

# The broker's pid: from the pidfile, else by looking for a java process run
# with exactly this run dir's server.properties (pidfile lost). Empty if none.
find_pid() {
    local pid=""
    [[ -f $PIDFILE ]] && pid=$(<"$PIDFILE")
    if is_ours "$pid"; then echo "$pid"; return 0; fi
    local d
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        if is_ours "$pid"; then echo "$pid"; return 0; fi
    done
    return 0
}

fetch_stamp_text() {
    printf 'kafka_version=%s\npom_sha256=%s\n' "$KAFKA_VERSION" "$(sha256sum <"$POM" | cut -d' ' -f1)"
}

fetch_complete() {
    [[ -f $STAMP && -f $LIBS/kafka_2.13-$KAFKA_VERSION.jar ]] && [[ "$(<"$STAMP")" == "$(fetch_stamp_text)" ]]
}

cmd_fetch() {
    [[ -f $POM ]] || die "missing $POM"
    if fetch_complete; then
        say "Kafka $KAFKA_VERSION already fetched: $LIBS"
        return 0
    fi
    command -v java >/dev/null || die "java not found on PATH (install a JDK 17+, e.g. apt-get install -y openjdk-17-jre-headless)"
    command -v mvn >/dev/null || die "mvn not found on PATH (install Maven, e.g. apt-get install -y maven)"
    mkdir -p "$KAFKA_HOME"
    # One fetch at a time per cache (parallel test sessions share the cache).
    (
        flock -w 600 9 || die "timed out waiting for another fetch of Kafka $KAFKA_VERSION ($KAFKA_HOME/.fetch.lock)"
        if fetch_complete; then exit 0; fi
        tmp=$(mktemp -d "$KAFKA_HOME/libs.tmp.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        say "fetching Apache Kafka $KAFKA_VERSION (org.apache.kafka:kafka_2.13) and its runtime dependencies from Maven Central ..."
        # shellcheck disable=SC2086
        if ! mvn -B -q -Dstyle.color=never ${CREDITWATCH_MAVEN_ARGS:-} -f "$POM" \
            -Dkafka.version="$KAFKA_VERSION" \
            dependency:copy-dependencies -DoutputDirectory="$tmp" -DincludeScope=runtime 2>&1 |
            sed -u 's/\x1b\[[0-9;]*m//g'; then  # Maven 3.8 emits colour resets even with -B
            die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its dependencies (see the mvn output above). Check access to https://repo.maven.apache.org/maven2 (proxy settings in ~/.m2/settings.xml, or CREDITWATCH_MAVEN_ARGS)."
        fi
        [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "mvn finished but kafka_2.13-$KAFKA_VERSION.jar is missing from $tmp"
        compgen -G "$tmp/slf4j-reload4j-*.jar" >/dev/null || die "mvn finished but the slf4j-reload4j binding is missing"
        rm -rf "$LIBS"
        mv "$tmp" "$LIBS"
        trap - EXIT
        fetch_stamp_text >"$STAMP"
        say "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) into $LIBS"
    ) 9>"$KAFKA_HOME/.fetch.lock"
}

write_properties() {
    local tmp=$PROPS.tmp
    cat >"$tmp" <<EOF
# Generated by scripts/kafka.sh on every start: edit the script, not this file.
# Single-node KRaft: this process is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT

log.dirs=$DATA_DIR
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
log.retention.hours=168
log.cleaner.enable=true

# Internal topics on a single node (consumer offsets, transactions / exactly-once).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0

num.network.threads=3
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
    mv "$tmp" "$PROPS"
}

# Short-lived Kafka tools (StorageTool) log into logs/tools/, not the broker's server.log.
java_tool() {
    mkdir -p "$LOG_DIR/tools"
    java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dkafka.logs.dir="$LOG_DIR/tools" -Dlog4j.configuration="file:$LOG4J" \
        -cp "$LIBS/*" "$@"
}

format_storage() {
    if [[ -f $DATA_DIR/meta.properties ]]; then
        return 0
    fi
    local cid
    if [[ ! -s $CLUSTER_ID_FILE ]]; then
        cid=$(java_tool kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/kafka.out") ||
            die "kafka.tools.StorageTool random-uuid failed (see $LOG_DIR/kafka.out)"
        cid=$(tail -n 1 <<<"$cid" | tr -d '[:space:]')
        [[ -n $cid ]] || die "kafka.tools.StorageTool random-uuid printed no cluster id"
        echo "$cid" >"$CLUSTER_ID_FILE"
    fi
    cid=$(<"$CLUSTER_ID_FILE")
    say "formatting KRaft storage in $DATA_DIR (cluster id $cid)"
    if ! java_tool kafka.tools.StorageTool format -t "$cid" -c "$PROPS" --ignore-formatted \
        >"$LOG_DIR/format.log" 2>&1; then
        cat "$LOG_DIR/format.log" >&2
        die "kafka.tools.StorageTool format failed"
    fi
}

# Print the last lines each log got since this start (byte offsets $1: server.log, $2: kafka.out).
show_log_tail() {
    local offsets=("${1:-0}" "${2:-0}") files=("$LOG_DIR/server.log" "$LOG_DIR/kafka.out") i size
    for i in 0 1; do
        size=$(stat -c %s "${files[i]}" 2>/dev/null || echo 0)
        ((size >= offsets[i])) || offsets[i]=0
        if ((size > offsets[i])); then
            printf -- '----- last lines of %s -----\n' "${files[i]}" >&2
            tail -c +"$((offsets[i] + 1))" "${files[i]}" | tail -n 40 >&2
        fi
    done
}

# Wait until the broker process $1 accepts connections and has logged
# "Kafka Server started" after byte offset $2 of server.log.
wait_ready() {
    local pid=$1 offset=$2 out_offset=${3:-0} deadline=$((SECONDS + START_TIMEOUT)) size
    while ((SECONDS < deadline)); do
        if ! is_ours "$pid"; then
            show_log_tail "$offset" "$out_offset"
            rm -f "$PIDFILE"
            die "Kafka exited during startup (logs above; full logs in $LOG_DIR)"
        fi
        if port_open "$HOST" "$PORT"; then
            size=$(stat -c %s "$LOG_DIR/server.log" 2>/dev/null || echo 0)
            ((size >= offset)) || offset=0 # log rolled over since
            if tail -c +"$((offset + 1))" "$LOG_DIR/server.log" 2>/dev/null | grep -qF 'Kafka Server started'; then
                return 0
            fi
        fi
        sleep 0.5
    done
    show_log_tail "$offset" "$out_offset"
    say "Kafka did not become ready within ${START_TIMEOUT}s; stopping it"
    stop_pid "$pid"
    die "Kafka startup timed out (full logs in $LOG_DIR)"
}

stop_pid() {
    local pid=$1 deadline
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while is_ours "$pid" && ((SECONDS < deadline)); do sleep 0.3; done
    if is_ours "$pid"; then
        say "Kafka (pid $pid) still running ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while is_ours "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        ! is_ours "$pid" || die "could not kill Kafka (pid $pid)"
    fi
    rm -f "$PIDFILE"
}

take_lock() {
    mkdir -p "$KDIR"
    exec 9>"$KDIR/.lock"
    flock -w 180 9 || die "another kafka.sh is busy with $KDIR (lock $KDIR/.lock)"
}

cmd_start() {
    check_ports
    fetch_complete || cmd_fetch
    command -v java >/dev/null || die "java not found on PATH"
    take_lock
    mkdir -p "$DATA_DIR" "$LOG_DIR"

    local pid
    pid=$(find_pid)
    if [[ -n $pid ]]; then
        echo "$pid" >"$PIDFILE"
        if ! port_open "$HOST" "$PORT"; then
            say "Kafka (pid $pid) is starting; waiting for it"
            wait_ready "$pid" 0
        fi
        say "already running (pid $pid) on $HOST:$PORT"
        return 0
    fi
    rm -f "$PIDFILE"

    if port_open "$HOST" "$PORT"; then
        die "port $PORT on $HOST is already in use by another process (see: ss -ltnp 'sport = :$PORT'); choose another with CREDITWATCH_KAFKA_PORT"
    fi
    if port_open "$HOST" "$CONTROLLER_PORT"; then
        die "port $CONTROLLER_PORT on $HOST is already in use by another process (see: ss -ltnp 'sport = :$CONTROLLER_PORT'); choose another with CREDITWATCH_KAFKA_CONTROLLER_PORT"
    fi

    write_properties
    format_storage

    local offset out_offset
    offset=$(stat -c %s "$LOG_DIR/server.log" 2>/dev/null || echo 0)
    out_offset=$(stat -c %s "$LOG_DIR/kafka.out" 2>/dev/null || echo 0)
    say "starting Kafka $KAFKA_VERSION on $HOST:$PORT (controller $CONTROLLER_PORT), logs in $LOG_DIR"
    # shellcheck disable=SC2086
    (
        cd "$KDIR"
        exec nohup setsid java $HEAP_OPTS -server \
            -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
            -XX:+ExplicitGCInvokesConcurrent -XX:ErrorFile="$LOG_DIR/hs_err_pid%p.log" \
            -Djava.awt.headless=true \
            -Dkafka.logs.dir="$LOG_DIR" -Dlog4j.configuration="file:$LOG4J" \
            -cp "$LIBS/*" kafka.Kafka "$PROPS"
    ) >>"$LOG_DIR/kafka.out" 2>&1 </dev/null 9>&- &
    pid=$!
    # setsid execs java in place (same pid) unless it had to fork; cover both.
    local i
    for i in $(seq 1 50); do
        is_ours "$pid" && break
        local found
        found=$(find_pid)
        if [[ -n $found ]]; then pid=$found; break; fi
        sleep 0.1
    done
    echo "$pid" >"$PIDFILE"
    wait_ready "$pid" "$offset" "$out_offset"
    say "Kafka is ready (pid $pid): bootstrap servers $HOST:$PORT"
}

cmd_stop() {
    take_lock
    local pid
    pid=$(find_pid)
    if [[ -z $pid ]]; then
        rm -f "$PIDFILE"
        say "not running ($KDIR)"
        return 0
    fi
    say "stopping Kafka (pid $pid) ..."
    stop_pid "$pid"
    say "stopped"
}

cmd_status() {
    local pid
    pid=$(find_pid)
    if [[ -z $pid ]]; then
        say "not running (run dir $KDIR)"
        return 3
    fi
    local state="accepting connections"
    port_open "$HOST" "$PORT" || state="NOT accepting connections yet"
    say "running (pid $pid), $state on $HOST:$PORT (controller $CONTROLLER_PORT); data $DATA_DIR; log $LOG_DIR/server.log"
}

usage() {
    sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

case ${1:-} in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop && cmd_start ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
