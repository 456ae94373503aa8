#!/usr/bin/env bash
# Set up what the demo uses, then run it: a build's hub events, from task to tag to repo, through
# the plugin loaded as the hub loads it, into the local RabbitMQ, printed as a consumer received
# them.  Extra arguments go to `koji-messagebus demo`.
#
# Only what the demo uses: RabbitMQ 3.10 (Debian's rabbitmq-server, scripts/services/rabbitmq3.sh),
# the venv with the package, and PostgreSQL only when the config given enables the outbox.  The
# test matrix (RabbitMQ 4 in a Debian 13 tree, Artemis, Broker-J, TLS, a KDC) is scripts/setup.sh's.
# Idempotent: a second run only checks and starts the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services/lib.sh

# The venv, built while RabbitMQ is installed and started (pip compiles proton: ~20 s of CPU).
# koji comes without its dependency requests-gssapi: the demo never logs in to a hub, and gssapi
# is compiled from source (a minute more); scripts/setup.sh installs it for the tests.
venv_ready() { [ -x .venv/bin/koji-messagebus ] && .venv/bin/python -c 'import koji.plugin, pika, proton' 2>/dev/null; }
build_venv() {
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q -e . pika python-dateutil requests six defusedxml
  .venv/bin/python -m pip install -q --no-deps koji
}
venv_pid=
if ! venv_ready; then
  # what pip needs to compile proton (with Cyrus SASL and OpenSSL, as scripts/setup.sh builds it)
  apt_install python3-venv python3-dev gcc libssl-dev libsasl2-dev libsasl2-modules
  say "building .venv (log: $STATE/demo-venv.log)"
  build_venv >"$STATE/demo-venv.log" 2>&1 &
  venv_pid=$!
fi

bash scripts/services/rabbitmq3.sh

if [ -n "$venv_pid" ]; then
  wait "$venv_pid" || { tail -n 30 "$STATE/demo-venv.log" >&2; die "could not build .venv"; }
  venv_ready || die "the .venv built lacks koji, pika or proton (see $STATE/demo-venv.log)"
fi
if .venv/bin/python -c 'import sys; from koji_messagebus.cli.demo import database_needed
sys.exit(0 if database_needed(sys.argv[1:]) else 1)' "$@" >/dev/null 2>&1; then
  bash scripts/services/postgresql.sh  # [outbox] enabled: the demo stores in the hub's database
  .venv/bin/python -c 'import psycopg2' 2>/dev/null || .venv/bin/python -m pip install -q psycopg2-binary
fi
exec .venv/bin/koji-messagebus demo "$@"
