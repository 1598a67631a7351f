#!/usr/bin/env bash
# A local single-node Apache Kafka 4.x broker (KRaft, broker+controller in one JVM) for
# development and tests, run from jars that Maven fetches from Maven Central.
#
#   deploy/kafka.sh fetch    resolve the jars (cached, reused afterwards)
#   deploy/kafka.sh start    start the broker; returns once it accepts connections and
#                            prints the bootstrap address
#   deploy/kafka.sh stop     stop it (data stays in KAFKA_DATA_DIR)
#   deploy/kafka.sh status   say whether it runs, and where
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1),
# KAFKA_DATA_DIR (~/.runstream/kafka), KAFKA_HEAP (512m),
# RUNSTREAM_CACHE (the jar cache, default ~/.cache/runstream), KAFKA_START_TIMEOUT_S (90).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
cache="${RUNSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runstream}"
libs="$cache/kafka-$kafka_version/libs"
port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-$((port + 1))}"
data="${KAFKA_DATA_DIR:-${RUNSTREAM_HOME:-$HOME/.runstream}/kafka}"
heap="${KAFKA_HEAP:-512m}"
timeout_s="${KAFKA_START_TIMEOUT_S:-90}"
pidfile="$data/broker.pid"

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

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
  fetch
  if running; then
    echo "127.0.0.1:$port"
    return 0
  fi
  mkdir -p "$data/logs"
  cat > "$data/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data/logs
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=16777216
PROPS
  if [ ! -f "$data/logs/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)"
    java -cp "$libs/*" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$data/server.properties" >"$data/format.log" 2>&1 \
      || { cat "$data/format.log" >&2; exit 1; }
  fi
  nohup java "-Xmx$heap" "-Xms$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$here/kafka/log4j2.yaml" -cp "$libs/*" \
    kafka.Kafka "$data/server.properties" >"$data/broker.log" 2>&1 &
  echo $! > "$pidfile"
  local deadline=$((SECONDS + timeout_s))
  until port_open "$port"; do
    if ! running; then
      echo "kafka.sh: broker exited during start; last log lines:" >&2
      tail -n 30 "$data/broker.log" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "kafka.sh: broker did not accept connections on 127.0.0.1:$port in ${timeout_s}s" >&2
      stop
      exit 1
    fi
    sleep 0.2
  done
  echo "127.0.0.1:$port"
}

stop() {
  if ! running; then
    rm -f "$pidfile"
    return 0
  fi
  local pid
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

status() {
  if running; then
    echo "running: 127.0.0.1:$port (pid $(cat "$pidfile"), data $data)"
  else
    echo "stopped (data $data)"
    return 3
  fi
}

case "${1:-}" in
  fetch) fetch; echo "$libs" ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
