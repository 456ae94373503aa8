#!/usr/bin/env bash
# Prepare a fresh Debian machine for koji-messagebus: Debian packages, the Python venv (.venv),
# PostgreSQL, RabbitMQ 3.10 with its AMQP 1.0 plugin and TLS, and the other brokers of the test
# matrix (KMB_BROKERS, default "rabbitmq4 artemis brokerj"; each on loopback ports of its own).
# Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '==> %s\n' "$*"; }

# Debian packages: krb5-config for koji's gssapi, Cyrus SASL for proton's GSSAPI, a KDC for tests.
pkgs=(rabbitmq-server postgresql debootstrap openjdk-17-jre-headless maven rpm rpmlint unzip libkrb5-dev libsasl2-dev libsasl2-modules libsasl2-modules-gssapi-mit krb5-kdc krb5-admin-server
      krb5-user openssl)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Consumer clients of other languages: Node.js with npm (tests/integration/test_node_consumer.py: rhea +
# ajv validate the plugin's messages against the shipped JSON Schemas; the consumer recipes and the type
# table, tests/integration/test_consumer_{recipes,types}.py) and Go (go-amqp from the Go proxy).
clients=()
command -v node >/dev/null && command -v npm >/dev/null || clients+=(nodejs npm)
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || clients+=(golang-go)
if ((${#clients[@]})); then
  say "apt-get install ${clients[*]} (consumers in other languages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${clients[@]}" >/dev/null
fi

# Services: PostgreSQL and RabbitMQ 3.10 (each script installs, starts and waits, bounded in time).
bash scripts/services/postgresql.sh
bash scripts/services/rabbitmq3.sh

# Python venv with the package (editable) and the test tools.
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# the docs site (sphinx-build -W in scripts/test.sh) and the schema validator (listen/preview --validate)
.venv/bin/python -m pip install -q -e '.[docs,schema]'
# proton must be compiled with Cyrus SASL (GSSAPI); a wheel cached from a build without it is not.
if ! .venv/bin/python -c 'import proton, sys; sys.exit(0 if proton.SASL.extended() else 1)'; then
  say "rebuilding python-qpid-proton with Cyrus SASL"
  .venv/bin/python -m pip install -q --no-cache-dir --force-reinstall --no-deps python-qpid-proton
fi
# Python 3.9 (oldest dependencies) and 3.13 venvs for scripts/test.sh (issue 16), where the interpreters exist
bash scripts/pythons.sh
# Apache httpd + mod_wsgi for tests/integration/test_apache.py (Debian's apache2 and
# libapache2-mod-wsgi-py3, and mod_wsgi's python-home venv; no instance is started here)
bash scripts/services/apache.sh
[ -x .ci/rabbitmq-tls.sh ] && bash .ci/rabbitmq-tls.sh
# the other brokers (after the TLS script: they serve its test CA's certificate too)
for b in ${KMB_BROKERS-rabbitmq4 artemis brokerj}; do
  start=$SECONDS
  bash "scripts/services/$b.sh"
  say "$b up in $((SECONDS - start)) s"
done
say "ready: $(.venv/bin/python -c 'import koji_messagebus, proton; print("koji-messagebus", koji_messagebus.__version__, "proton", ".".join(map(str, proton.VERSION)))')"
