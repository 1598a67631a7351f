#!/usr/bin/env bash
# A local Apache Kafka 4.x on this machine, run from jars that Maven fetches from Maven
# Central: one broker by default, or an N-node KRaft cluster on loopback
# (KAFKA_NODES=3: three JVMs, each broker and controller, the controller quorum made of
# all of them) for tests of broker failure. Every node is broker+controller in one JVM.
#
#   deploy/kafka.sh fetch          resolve the jars (cached, reused afterwards)
#   deploy/kafka.sh start [NODE]   start every node (or node NODE, 1..N); returns once
#                                  they accept connections and prints the bootstrap
#                                  address ("127.0.0.1:P1,127.0.0.1:P2,..." for a cluster)
#   deploy/kafka.sh stop [NODE]    stop every node (or one); data stays in KAFKA_DATA_DIR
#   deploy/kafka.sh status         each node, running or stopped, with pid and port;
#                                  exit status 3 when any node is stopped
#
# Environment: KAFKA_NODES (1), KAFKA_PORT (9092; node i listens on KAFKA_PORT+i-1), KAFKA_CONTROLLER_PORT
# (KAFKA_PORT+N; node i's controller on KAFKA_CONTROLLER_PORT+i-1),
# KAFKA_DATA_DIR (~/.runstream/kafka; a cluster's node i keeps its data in
# KAFKA_DATA_DIR/node-<i>), KAFKA_HEAP (512m for one node; 256m per node of a cluster,
# which starts at 128m), KAFKA_JVM_OPTS (G1 for one node; serial GC and the client
# compiler only for a cluster), RUNSTREAM_CACHE (the jar cache, default ~/.cache/runstream),
# KAFKA_START_TIMEOUT_S (90). `start` records the node count and ports in
# KAFKA_DATA_DIR/layout; later calls on that data directory default to them.
#
# A cluster's topics are replicated min(N, 3) times with min.insync.replicas=2 (N >= 3) by
# default, auto-creation is off (Runstream's consumer creates its topics, see
# runstream.consumer.topics), and a node that stops heartbeating is fenced within ~3 s
# (defaults: 9 s), so failover in tests takes seconds. One node keeps the defaults it had.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
cache="${RUNSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runstream}"
libs="$cache/kafka-$kafka_version/libs"
data="${KAFKA_DATA_DIR:-${RUNSTREAM_HOME:-$HOME/.runstream}/kafka}"
# What the last `start` used (node count, broker and controller base ports): the defaults
# of later calls, so `status` and `stop NODE` need no environment repeated.
saved_nodes=1 saved_port=9092 saved_controller=""
if [ -f "$data/layout" ]; then read -r saved_nodes saved_port saved_controller < "$data/layout"; fi
nodes="${KAFKA_NODES:-$saved_nodes}"
case "$nodes" in
  ''|*[!0-9]*|0) echo "kafka.sh: KAFKA_NODES=$nodes: expected a node count >= 1" >&2; exit 2 ;;
esac
port="${KAFKA_PORT:-$saved_port}"
if [ -z "${KAFKA_PORT:-}" ] && [ -z "${KAFKA_NODES:-}" ] && [ -n "$saved_controller" ]; then
  controller_port="${KAFKA_CONTROLLER_PORT:-$saved_controller}"
else
  controller_port="${KAFKA_CONTROLLER_PORT:-$((port + nodes))}"
fi
if [ "$nodes" -eq 1 ]; then
  heap="${KAFKA_HEAP:-512m}"
  min_heap="$heap"
  jvm_opts="${KAFKA_JVM_OPTS:--XX:+UseG1GC}"
else
  heap="${KAFKA_HEAP:-256m}"
  min_heap="128m"
  # N JVMs on one machine: the client compiler only and one GC thread start a node in
  # about half the CPU time, which is what a loaded test machine is short of.
  jvm_opts="${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1}"
fi
timeout_s="${KAFKA_START_TIMEOUT_S:-90}"
# The storage tool runs for a second or two: no JIT beyond the client compiler.
tool_opts="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { echo "kafka.sh: mvn not found; install Maven" >&2; exit 1; }
  command -v java >/dev/null || { echo "kafka.sh: java not found; install Java 17+" >&2; exit 1; }
  echo "kafka.sh: fetching Apache Kafka $kafka_version jars with mvn into $libs" >&2
  rm -rf "$libs"
  mkdir -p "$libs"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" >&2
  touch "$libs/.complete"
}

# Where node $1 lives: one node keeps the layout it always had (KAFKA_DATA_DIR itself).
node_dir() {
  if [ "$nodes" -eq 1 ]; then echo "$data"; else echo "$data/node-$1"; fi
}
node_port() { echo $((port + $1 - 1)); }
node_controller_port() { echo $((controller_port + $1 - 1)); }
pidfile() { echo "$(node_dir "$1")/broker.pid"; }

running() {
  local pf
  pf="$(pidfile "$1")"
  [ -f "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

check_node() {
  case "$1" in
    ''|*[!0-9]*) echo "kafka.sh: node $1: expected 1..$nodes" >&2; exit 2 ;;
  esac
  if [ "$1" -lt 1 ] || [ "$1" -gt "$nodes" ]; then
    echo "kafka.sh: node $1: expected 1..$nodes" >&2
    exit 2
  fi
}

voters() {
  local i out=""
  for i in $(seq 1 "$nodes"); do
    out="$out${out:+,}$i@127.0.0.1:$(node_controller_port "$i")"
  done
  echo "$out"
}

bootstrap() {
  local i out=""
  for i in $(seq 1 "$nodes"); do out="$out${out:+,}127.0.0.1:$(node_port "$i")"; done
  echo "$out"
}

write_properties() {
  local i="$1" dir replication min_isr
  dir="$(node_dir "$i")"
  replication=$((nodes < 3 ? nodes : 3))
  min_isr=$((replication < 3 ? 1 : 2))
  mkdir -p "$dir/logs"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://127.0.0.1:$(node_port "$i"),CONTROLLER://127.0.0.1:$(node_controller_port "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(node_port "$i")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/logs
num.partitions=4
offsets.topic.num.partitions=4
group.initial.rebalance.delay.ms=0
message.max.bytes=16777216
PROPS
  if [ "$nodes" -eq 1 ]; then
    cat >> "$dir/server.properties" <<PROPS
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
PROPS
  else
    # Fast failure detection on loopback: heartbeats every 500 ms, fenced after 3 s.
    cat >> "$dir/server.properties" <<PROPS
auto.create.topics.enable=false
default.replication.factor=$replication
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replication
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
replica.lag.time.max.ms=10000
unclean.leader.election.enable=false
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
background.threads=2
log.cleaner.threads=1
PROPS
  fi
}

# shellcheck disable=SC2086
cluster_id() {
  if [ ! -s "$data/cluster.id" ]; then
    mkdir -p "$data"
    java $tool_opts -cp "$libs/*" kafka.tools.StorageTool random-uuid > "$data/cluster.id.tmp"
    mv "$data/cluster.id.tmp" "$data/cluster.id"
  fi
  cat "$data/cluster.id"
}

# Format node $1's log directory once (in the background when $2 is "&").
# shellcheck disable=SC2086
format_node() {
  local dir
  dir="$(node_dir "$1")"
  if [ -f "$dir/logs/meta.properties" ]; then return 0; fi
  java $tool_opts -cp "$libs/*" kafka.tools.StorageTool format -t "$(cat "$data/cluster.id")" \
    -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; return 1; }
}

launch_node() {
  local dir
  dir="$(node_dir "$1")"
  # shellcheck disable=SC2086
  nohup java "-Xmx$heap" "-Xms$min_heap" $jvm_opts -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$here/kafka/log4j2.yaml" -cp "$libs/*" \
    kafka.Kafka "$dir/server.properties" >"$dir/broker.log" 2>&1 &
  echo $! > "$(pidfile "$1")"
}

await_node() {
  local i="$1" deadline=$2 p
  p="$(node_port "$i")"
  until port_open "$p"; do
    if ! running "$i"; then
      echo "kafka.sh: node $i exited during start; last log lines:" >&2
      tail -n 30 "$(node_dir "$i")/broker.log" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "kafka.sh: node $i did not accept connections on 127.0.0.1:$p in ${timeout_s}s" >&2
      return 1
    fi
    sleep 0.2
  done
}

# Start the nodes named in "$@" (those not running) together: a cluster's broker opens
# its port only once the controller quorum (a majority of nodes) is up.
start_nodes() {
  fetch
  mkdir -p "$data"
  echo "$nodes $port $controller_port" > "$data/layout"
  cluster_id >/dev/null
  local i todo=() pids=()
  for i in "$@"; do
    running "$i" || todo+=("$i")
  done
  for i in "${todo[@]}"; do
    write_properties "$i"
    format_node "$i" & pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || exit 1; done
  for i in "${todo[@]}"; do launch_node "$i"; done
  local deadline=$((SECONDS + timeout_s))
  for i in "${todo[@]}"; do
    await_node "$i" "$deadline" || { stop_nodes "${todo[@]}"; exit 1; }
  done
}

# Stop node $1: SIGTERM, then SIGKILL after $2 seconds (default 30).
stop_node() {
  local i="$1" grace="${2:-30}" pid pf
  pf="$(pidfile "$i")"
  if ! running "$i"; then
    rm -f "$pf"
    return 0
  fi
  pid="$(cat "$pf")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((grace * 5))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pf"
}

# Stop the nodes named in "$@" together (SIGTERM to all, then wait for each). When the
# whole cluster stops at once, the last brokers can neither hand their partitions to
# anyone nor reach a controller quorum, and wait for one: they get 10 s, then SIGKILL
# (replicas recover their logs at the next start; nothing acknowledged is lost).
stop_nodes() {
  local i grace=30
  [ "$#" -lt 2 ] || grace=10
  for i in "$@"; do stop_node "$i" "$grace" & done
  wait
}

status() {
  local i down=0 dir
  for i in $(seq 1 "$nodes"); do
    dir="$(node_dir "$i")"
    local prefix=""
    [ "$nodes" -eq 1 ] || prefix="node $i: "
    if running "$i"; then
      echo "${prefix}running: 127.0.0.1:$(node_port "$i") (pid $(cat "$(pidfile "$i")"), data $dir)"
    else
      if [ "$nodes" -eq 1 ]; then
        echo "stopped (data $dir)"
      else
        echo "${prefix}stopped: 127.0.0.1:$(node_port "$i") (data $dir)"
      fi
      down=1
    fi
  done
  [ "$down" -eq 0 ] || return 3
}

all_nodes() { seq 1 "$nodes"; }

case "${1:-}" in
  fetch) fetch; echo "$libs" ;;
  start)
    if [ -n "${2:-}" ]; then
      check_node "$2"; start_nodes "$2"; echo "127.0.0.1:$(node_port "$2")"
    else
      # shellcheck disable=SC2046
      start_nodes $(all_nodes); bootstrap
    fi ;;
  stop)
    if [ -n "${2:-}" ]; then
      check_node "$2"; stop_node "$2"
    else
      # shellcheck disable=SC2046
      stop_nodes $(all_nodes)
    fi ;;
  status) status ;;
  *) echo "usage: $0 fetch | start [NODE] | stop [NODE] | status" >&2; exit 2 ;;
esac
