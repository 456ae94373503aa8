#!/usr/bin/env bash
# RabbitMQ 3.10 (Debian 12's rabbitmq-server) on 127.0.0.1:5672 with its AMQP 1.0 plugin.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
apt_install rabbitmq-server
log=/var/log/rabbitmq/rabbit@$(hostname -s).log
had_epmd=$(epmd_pid || true)  # before any Erlang command: each starts an epmd if none runs
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  say "starting RabbitMQ 3 (rabbit@$(hostname -s))"
  # the AMQP 1.0 plugin before the start, so that its listener is up when the node is
  rabbitmq-plugins --offline -q enable rabbitmq_amqp1_0 >/dev/null
  rabbitmq-server -detached
  record rabbitmq3
  wait_for 90 "$log" "RabbitMQ 3" rabbitmq-diagnostics -q ping
  record_epmd "$had_epmd"
  record rabbitmq3 "$(rabbitmqctl -q eval 'os:getpid().' 2>/dev/null | tr -dc 0-9)"
fi
rabbitmq-plugins -q enable rabbitmq_amqp1_0 >/dev/null
wait_for 60 "$log" "RabbitMQ 3 AMQP 1.0 listener on 5672" port_open 5672
say "RabbitMQ $(rabbitmqctl -q version 2>/dev/null || echo 3) ready on 127.0.0.1:5672"
