#!/usr/bin/env bash
# A local 3-node RabbitMQ cluster from the installed rabbitmq-server, without Docker: for
# conveyor's cluster chaos scenarios (`make chaos-cluster`) and for trying a multi-host
# CONVEYOR_AMQP_URL by hand. Nothing here touches another broker on the machine.
#
#   scripts/cluster.sh start          start (or find running) 3 nodes, join them, print URLs
#   scripts/cluster.sh stop           stop the 3 nodes and delete their data
#   scripts/cluster.sh status         which nodes run, the cluster's view
#   scripts/cluster.sh url            the multi-host AMQP URL (for scripts)
#   scripts/cluster.sh start-node N   (re)start node N of a cluster that exists (chaos)
#   scripts/cluster.sh stop-node N    stop node N gracefully (rabbitmqctl stop)
#   scripts/cluster.sh kill-node N    SIGKILL node N's Erlang VM (chaos)
#   scripts/cluster.sh pid N          the OS pid of node N
#
# Node N (1..3) is conveyorN@localhost with AMQP on 127.0.0.1:$((5790+N)), management on
# 15790+N and Erlang distribution on 25790+N (its CLI tools use 35790+N…), data and logs
# in $CONVEYOR_CLUSTER_DIR (default /tmp/conveyor-cluster). The Debian wrappers run the
# server as user rabbitmq, which shares /var/lib/rabbitmq/.erlang.cookie with rabbitmqctl:
# run this as root (or as rabbitmq).
set -euo pipefail

DIR=${CONVEYOR_CLUSTER_DIR:-/tmp/conveyor-cluster}
AMQP_BASE=${CONVEYOR_CLUSTER_AMQP_BASE:-5790}
MANAGEMENT_BASE=$((AMQP_BASE + 10000))
DIST_BASE=$((AMQP_BASE + 20000))
NODES=(1 2 3)
# A quorum queue is a Raft group per node and each one holds files open: 1024 (how Debian
# starts its own broker) runs out with a few hundred queues alive.
OPEN_FILES=${CONVEYOR_CLUSTER_OPEN_FILES:-20000}
SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server  # what the Debian wrapper runs

node_name() { echo "conveyor$1@localhost"; }
amqp_port() { echo $((AMQP_BASE + $1)); }

die() { echo "cluster: $*" >&2; exit 1; }

require_rabbitmq() {
  if [ ! -x "$SERVER" ] || ! command -v rabbitmqctl >/dev/null 2>&1; then
    echo "cluster: rabbitmq-server is not installed (apt-get install rabbitmq-server); no cluster started" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ] && [ "$(id -un)" != rabbitmq ]; then
    die "run as root or as user rabbitmq (the Debian wrappers start the server as rabbitmq)"
  fi
}

ctl() { local n=$1; shift; rabbitmqctl -n "$(node_name "$n")" "$@"; }

running() { ctl "$1" -q status >/dev/null 2>&1; }

write_config() {
  local n=$1 d="$DIR/conveyor$1"
  mkdir -p "$d/log"
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $((MANAGEMENT_BASE + n))
EOF
  echo '[rabbitmq_management,rabbitmq_shovel,rabbitmq_shovel_management].' >"$d/enabled_plugins"
}

start_node() {
  local n=$1 d="$DIR/conveyor$1"
  running "$n" && return 0
  write_config "$n"
  chown -R rabbitmq:rabbitmq "$DIR" 2>/dev/null || true
  (
    export RABBITMQ_NODENAME="$(node_name "$n")" \
      RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
      RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" \
      RABBITMQ_DIST_PORT=$((DIST_BASE + n)) RABBITMQ_CONF_ENV_FILE=/dev/null \
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
      ERL_EPMD_ADDRESS=127.0.0.1
    # Not through the rabbitmq-server wrapper: its `su` resets the soft open-files limit to
    # 1024 (PAM), whatever `ulimit -n` said before; raise it after the switch of user.
    local start="ulimit -n $OPEN_FILES && cd /var/lib/rabbitmq && exec $SERVER -detached"
    if [ "$(id -u)" = 0 ]; then
      su rabbitmq -s /bin/sh -c "$start" >/dev/null 2>&1
    else
      sh -c "$start" >/dev/null 2>&1
    fi
  )
}

# `await_startup` right after `-detached` can exit 69 before the node registers: retry.
await_node() {
  local n=$1
  for _ in $(seq 120); do
    ctl "$n" -q await_startup >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "node $(node_name "$n") did not start; see $DIR/conveyor$n/log"
}

in_cluster() {  # node $1 lists node $2 as a running cluster member
  ctl "$1" -q cluster_status --formatter json 2>/dev/null | grep -q "\"$(node_name "$2")\""
}

join() {
  local n=$1
  in_cluster 1 "$n" && in_cluster "$n" 1 && return 0
  local step out
  for step in stop_app "join_cluster $(node_name 1)" start_app; do
    # shellcheck disable=SC2086  # the step's words are its arguments
    out=$(ctl "$n" -q $step 2>&1) || die "$(node_name "$n") $step failed: $out"
  done
}

url() {
  local hosts=()
  for n in "${NODES[@]}"; do hosts+=("127.0.0.1:$(amqp_port "$n")"); done
  local IFS=,
  echo "amqp://guest:guest@${hosts[*]}/"
}

start() {
  require_rabbitmq
  mkdir -p "$DIR"
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in "${NODES[@]}"; do await_node "$n"; done
  for n in 2 3; do join "$n"; done
  for n in "${NODES[@]}"; do await_node "$n"; done
  local members
  members=$(ctl 1 -q eval 'length(rabbit_nodes:all_running()).' 2>/dev/null || echo 0)
  [ "$members" = 3 ] || die "only $members of 3 nodes joined; see $DIR/conveyor*/log"
  echo "RabbitMQ cluster of 3 nodes running ($(node_name 1), $(node_name 2), $(node_name 3)):"
  for n in "${NODES[@]}"; do
    echo "  node $n: amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/  management http://127.0.0.1:$((MANAGEMENT_BASE + n))/"
  done
  echo "export CONVEYOR_AMQP_URL=$(url)"
  echo "export CONVEYOR_MANAGEMENT_URL=http://guest:guest@127.0.0.1:$((MANAGEMENT_BASE + 1))/"
}

pid_of() {
  local file="$DIR/conveyor$1/mnesia/$(node_name "$1").pid"
  [ -s "$file" ] && cat "$file" || ctl "$1" -q eval 'os:getpid().' 2>/dev/null | tr -d '"'
}

stop() {
  command -v rabbitmqctl >/dev/null 2>&1 || { echo "cluster: rabbitmqctl is not installed; nothing to stop" >&2; return 0; }
  for n in 3 2 1; do
    if running "$n"; then ctl "$n" -q stop >/dev/null 2>&1 || true; fi
  done
  for n in "${NODES[@]}"; do  # a node that does not stop in time is killed
    local pid
    pid=$(pid_of "$n" || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr "\\0" " " </proc/"$pid"/environ | grep -q "RABBITMQ_NODENAME=conveyor$n@"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  case "$DIR" in /tmp/conveyor-cluster*) rm -rf "$DIR" ;; *) echo "cluster: data left in $DIR" ;; esac
  echo "RabbitMQ cluster stopped"
}

status() {
  for n in "${NODES[@]}"; do
    if running "$n"; then echo "$(node_name "$n") running, pid $(pid_of "$n")"; else echo "$(node_name "$n") not running"; fi
  done
  running 1 && ctl 1 -q cluster_status || true
}

node_arg() { case "${1:-}" in 1|2|3) ;; *) die "node number 1, 2 or 3 expected, got '${1:-}'";; esac; }

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url ;;
  start-node) node_arg "${2:-}"; require_rabbitmq; start_node "$2"; await_node "$2" ;;
  stop-node) node_arg "${2:-}"; ctl "$2" -q stop ;;
  kill-node)
    node_arg "${2:-}"
    pid=$(pid_of "$2")
    tr "\\0" " " </proc/"$pid"/environ 2>/dev/null | grep -q "RABBITMQ_NODENAME=conveyor$2@" || die "pid $pid is not node $2"
    kill -KILL "$pid"
    ;;
  pid) node_arg "${2:-}"; pid_of "$2" ;;
  *) die "usage: $0 start|stop|status|url|start-node N|stop-node N|kill-node N|pid N" ;;
esac
