#!/usr/bin/env bash
# A 3-node RabbitMQ 4.0.5 cluster from the Debian 13 tree of rabbitmq4.sh, on loopback:
#   rabbitc1@localhost AMQP 127.0.0.1:5675 (dist 25675), rabbitc2 :5676 (25676), rabbitc3 :5677 (25677)
# one cookie (the tree's), v1 addresses denied as on rabbit4; transient non-exclusive queues are
# permitted here: with them denied a node that restarts into the cluster fails to boot on 4.0.5.  For the bounded cluster test
# (tests/integration/test_cluster.py); not started by setup.sh.
#   cluster.sh start            fresh data, three nodes, c2 and c3 joined to c1 (bounded)
#   cluster.sh stop             stop the three nodes
#   cluster.sh stop-node N      stop node N (1..3) only; start-node N: start it again (rejoins)
#   cluster.sh status           the running nodes, as the cluster sees them
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rabbitmq4-lib.sh"
BASE_PORT=${KMB_CLUSTER_BASE_PORT:-5674}
RABBIT4_DENY_TRANSIENT=0  # node N: AMQP BASE_PORT+N, dist 20000 above

port_of() { echo $((BASE_PORT + $1)); }
dist_of() { echo $((BASE_PORT + 20000 + $1)); }
start_node() { rabbit4_start "rabbitc$1" "$(port_of "$1")" "$(dist_of "$1")" "" 120; }

case ${1:-start} in
  start)
    trixie_tree
    start=$SECONDS
    for n in 1 2 3; do rabbit4_stop "rabbitc$n"; rm -rf "$TREE/var/lib/kmb/rabbitc$n/mnesia"; done
    for n in 1 2 3; do start_node "$n"; done
    for n in 2 3; do
      rabbit4_ctl "rabbitc$n" rabbitmqctl stop_app >/dev/null
      rabbit4_ctl "rabbitc$n" rabbitmqctl join_cluster rabbitc1@localhost >/dev/null \
        || die "rabbitc$n could not join rabbitc1"
      rabbit4_ctl "rabbitc$n" rabbitmqctl start_app >/dev/null
    done
    members() { rabbit4_ctl rabbitc1 rabbitmqctl eval 'length(rabbit_nodes:list_running()).' 2>/dev/null; }
    three() { [ "$(members)" = 3 ]; }
    wait_for 60 "$TREE/var/lib/kmb/rabbitc1/log/rabbitc1@localhost.log" "a 3-node cluster" three
    for n in 1 2 3; do
      wait_for 30 "$TREE/var/lib/kmb/rabbitc$n/log/rabbitc$n@localhost.log" "rabbitc$n AMQP" port_open "$(port_of "$n")"
    done
    say "RabbitMQ 4 cluster ready in $((SECONDS - start)) s: 127.0.0.1:$(port_of 1) :$(port_of 2) :$(port_of 3)"
    ;;
  stop) for n in 3 2 1; do rabbit4_stop "rabbitc$n"; done ;;
  stop-node) rabbit4_stop "rabbitc${2:?node number}" ;;
  start-node) start_node "${2:?node number}" ;;
  status) rabbit4_ctl rabbitc1 rabbitmqctl cluster_status ;;
  *) die "usage: cluster.sh start|stop|stop-node N|start-node N|status" ;;
esac
