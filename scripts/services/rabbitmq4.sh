#!/usr/bin/env bash
# RabbitMQ 4.0.5 (Debian 13's rabbitmq-server, from a debootstrap tree) as its own node
# rabbit4@localhost beside RabbitMQ 3.10: AMQP 1.0 and 0-9-1 on 127.0.0.1:5673, TLS on :5674 (the
# test CA of .ci/rabbitmq-tls.sh, when it made one), dist port 25673, deprecated features denied.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rabbitmq4-lib.sh"
PORT=${KMB_RABBITMQ4_PORT:-5673}
TLS_PORT=${KMB_RABBITMQ4_TLS_PORT:-5674}
DIST_PORT=${KMB_RABBITMQ4_DIST_PORT:-25673}
NODE=${KMB_RABBITMQ4_NODE:-rabbit4}
TLS_DIR=${KMB_TLS_DIR:-/var/lib/koji-messagebus-test/tls}
trixie_tree

extra=""
if [ -f "$TLS_DIR/server.pem" ]; then
  # the tree cannot see the host's files: a copy of the CA and the server's key pair
  tls=/var/lib/kmb/tls
  mkdir -p "$TREE$tls"
  cp "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem" "$TLS_DIR/server.key" "$TREE$tls/"
  chroot "$TREE" chown -R rabbitmq:rabbitmq "$tls"
  chmod 0600 "$TREE$tls/server.key"
  extra="listeners.ssl.1 = 127.0.0.1:$TLS_PORT\nssl_options.cacertfile = $tls/ca.pem\n"
  extra+="ssl_options.certfile = $tls/server.pem\nssl_options.keyfile = $tls/server.key\n"
  extra+="ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = false\n"
fi
rabbit4_start "$NODE" "$PORT" "$DIST_PORT" "$extra" 120
if [ -n "$extra" ]; then
  wait_for 30 "$TREE/var/lib/kmb/$NODE/log/$NODE@localhost.log" "RabbitMQ 4 TLS listener on $TLS_PORT" \
    port_open "$TLS_PORT"
fi
version=$(rabbit4_ctl "$NODE" rabbitmqctl version 2>/dev/null || echo 4)
say "RabbitMQ $version ready on 127.0.0.1:$PORT${extra:+ (TLS on :$TLS_PORT)} (node $NODE@localhost)"
