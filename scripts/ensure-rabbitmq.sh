#!/usr/bin/env bash
# Make sure a RabbitMQ broker with the management and shovel plugins answers for conveyor.
#  - a broker already listening (local, or remote via CONVEYOR_AMQP_URL): use it;
#  - a local rabbitmq-server installed but stopped: start it;
#  - none installed: install Debian's rabbitmq-server when root with apt, else explain.
set -euo pipefail

amqp_url="${CONVEYOR_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
hostport=$(python3 - "$amqp_url" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(f"{u.hostname or '127.0.0.1'} {u.port or (5671 if u.scheme == 'amqps' else 5672)}")
PY
)
read -r host port <<<"$hostport"

listening() {
  python3 - "$1" "$2" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}

local_host=false
case "$host" in 127.*|localhost|::1) local_host=true ;; esac

if listening "$host" "$port"; then
  echo "RabbitMQ is listening on $host:$port"
elif [ "$local_host" = false ]; then
  echo "RabbitMQ at $host:$port does not answer; start it (e.g. docker compose up -d rabbitmq)" >&2
  exit 1
else
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "Installing rabbitmq-server with apt-get…"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    else
      echo "No RabbitMQ here. Start one with: docker compose up -d rabbitmq" >&2
      echo "(or install Debian's rabbitmq-server as root and run this again)" >&2
      exit 1
    fi
  fi
  echo "Starting the local rabbitmq-server…"
  # The package's service may have started it already; -detached fails harmlessly then.
  # Debian's wrapper starts the node through `su rabbitmq`, which resets the open-files
  # limit to 1024; with a few hundred quorum queues RabbitMQ's file handle cache runs out
  # and vhost creation hangs. Start it with the hard limit instead.
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1 && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    su rabbitmq -s /bin/sh -c 'ulimit -n "$(ulimit -Hn)"; cd /var/lib/rabbitmq && /usr/lib/rabbitmq/bin/rabbitmq-server -detached' 2>/dev/null || true
  else
    rabbitmq-server -detached 2>/dev/null || true
  fi
  # await_startup can exit 69 before the node has registered: retry it.
  for _ in $(seq 1 60); do
    if rabbitmqctl -q await_startup >/dev/null 2>&1; then break; fi
    sleep 1
  done
  listening "$host" "$port" || { echo "rabbitmq-server did not start on $port" >&2; exit 1; }
fi

if [ "$local_host" = true ] && command -v rabbitmq-plugins >/dev/null 2>&1; then
  rabbitmq-plugins -q enable rabbitmq_management rabbitmq_shovel rabbitmq_shovel_management >/dev/null
  mgmt_port="${CONVEYOR_RABBITMQ_MANAGEMENT_PORT:-15672}"
  for _ in $(seq 1 30); do
    listening 127.0.0.1 "$mgmt_port" && break
    sleep 1
  done
  listening 127.0.0.1 "$mgmt_port" || { echo "management plugin did not come up on $mgmt_port" >&2; exit 1; }
  echo "RabbitMQ management console: http://127.0.0.1:$mgmt_port/ (plugins: management, shovel)"
  # A broker someone else started is used as it is: say so when its open-files limit is too
  # low for quorum queues, never restart it behind their back.
  python3 - "$amqp_url" "$mgmt_port" <<'PY' || true
import base64, json, sys, urllib.request
from urllib.parse import unquote, urlsplit
RECOMMENDED = 50_000  # RabbitMQ's production checklist
amqp = urlsplit(sys.argv[1])
user, password = unquote(amqp.username or "guest"), unquote(amqp.password or "guest")
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[2]}/api/nodes")
token = base64.b64encode(f"{user}:{password}".encode()).decode()
request.add_header("Authorization", f"Basic {token}")
try:
    nodes = json.load(urllib.request.urlopen(request, timeout=10))
except Exception:
    sys.exit(0)  # no monitoring rights: nothing to report
for node in nodes:
    fd_total = node.get("fd_total")
    if isinstance(fd_total, int) and fd_total < RECOMMENDED:
        print(
            f"warning: RabbitMQ node {node.get('name')} may open only {fd_total} files "
            f"(fd_total; the production checklist asks for at least {RECOMMENDED}): a few "
            "hundred quorum queues will stall it. Raise it with LimitNOFILE=65536 in its "
            "systemd unit, or restart it as: ulimit -n 65536; rabbitmq-server -detached",
            file=sys.stderr,
        )
PY
fi
