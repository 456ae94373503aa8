# RabbitMQ 4.x nodes from a Debian 13 (trixie) tree (sourced by rabbitmq4.sh and cluster.sh).
#
# The tree: `debootstrap --variant=minbase trixie` into $TREE.tmp, then `apt-get install
# rabbitmq-server` inside it; renamed to $TREE only when both finished, so an interrupted run is
# rebuilt rather than mistaken for a cache.  Kept between runs (~4 min to build, ~0 s when cached).
# Each node runs in the tree (chroot) as its own Erlang node beside the host's RabbitMQ 3.10,
# sharing the host's epmd on 4369, with its own ports, data and log directories under
# /var/lib/kmb/NODE inside the tree, as the tree's `rabbitmq` user (one cookie for all nodes).
TREE=${KMB_TRIXIE_DIR:-$STATE/trixie}
TRIXIE_MIRROR=${KMB_TRIXIE_MIRROR:-http://deb.debian.org/debian}

# in_tree CMD...: run CMD inside the tree (with /proc mounted, see tree_mount).
in_tree() { chroot "$TREE" "$@"; }

# tree_mount DIR: /proc inside DIR (the nodes and apt need it); /dev is debootstrap's static nodes.
tree_mount() {
  mountpoint -q "$1/proc" || mount -t proc proc "$1/proc"
}
tree_umount() {
  if mountpoint -q "$1/proc"; then umount "$1/proc" || umount -l "$1/proc"; fi
}

# trixie_tree: make sure $TREE holds Debian 13 with rabbitmq-server installed.
trixie_tree() {
  [ -f "$TREE/.kmb-complete" ] && return 0
  local tmp=$TREE.tmp start=$SECONDS
  apt_install debootstrap
  if [ ! -f "$tmp/.kmb-debootstrap-done" ]; then
    rm -rf "$tmp"
    say "debootstrap --variant=minbase trixie $tmp (a few minutes, once; log $STATE/debootstrap.log)"
    if ! debootstrap --variant=minbase trixie "$tmp" "$TRIXIE_MIRROR" >"$STATE/debootstrap.log" 2>&1; then
      tail -n 30 "$STATE/debootstrap.log" >&2
      die "debootstrap of Debian 13 failed"
    fi
    touch "$tmp/.kmb-debootstrap-done"
  fi
  say "apt-get install rabbitmq-server in the Debian 13 tree (log $STATE/trixie-apt.log)"
  # no service starts inside the tree while packages install
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
  chmod 0755 "$tmp/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$tmp/etc/resolv.conf"
  tree_mount "$tmp"
  local rc=0
  { chroot "$tmp" apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y -q --no-install-recommends \
      rabbitmq-server; } >"$STATE/trixie-apt.log" 2>&1 || rc=$?
  tree_umount "$tmp"
  if ((rc)); then
    tail -n 30 "$STATE/trixie-apt.log" >&2
    die "apt-get install rabbitmq-server in the Debian 13 tree failed (rc $rc)"
  fi
  chroot "$tmp" apt-get clean
  touch "$tmp/.kmb-complete"
  rm -rf "$TREE"
  mv "$tmp" "$TREE"
  say "Debian 13 tree ready in $TREE ($((SECONDS - start)) s)"
}

# rabbit4_env NODE AMQP_PORT DIST_PORT: the node's server environment, in the array RABBIT4_ENV.
rabbit4_env() {
  local node=$1 port=$2 dist=$3 base=/var/lib/kmb/$1
  RABBIT4_ENV=(HOME=/var/lib/rabbitmq "RABBITMQ_NODENAME=$node@localhost"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 "RABBITMQ_NODE_PORT=$port" "RABBITMQ_DIST_PORT=$dist"
    "RABBITMQ_MNESIA_BASE=$base/mnesia" "RABBITMQ_LOG_BASE=$base/log"
    "RABBITMQ_CONFIG_FILE=$base/rabbitmq.conf" "RABBITMQ_ENABLED_PLUGINS_FILE=$base/enabled_plugins"
    "RABBITMQ_ADVANCED_CONFIG_FILE=$base/advanced.config" "RABBITMQ_PID_FILE=$base/pid"
    "RABBITMQ_CONF_ENV_FILE=$base/rabbitmq-env.conf"
    # distribution on loopback only
    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}")
}

# rabbit4_ctl NODE CMD ARGS...: rabbitmqctl (or another CLI: CMD) against NODE, inside the tree.
rabbit4_ctl() {
  local node=$1 cmd=$2; shift 2
  chroot "$TREE" env HOME=/var/lib/rabbitmq /usr/sbin/"$cmd" -n "$node@localhost" -q "$@"
}

# rabbit4_up NODE: the node answers and its AMQP listener is up.
rabbit4_up() {
  rabbit4_ctl "$1" rabbitmq-diagnostics ping >/dev/null 2>&1 \
    && rabbit4_ctl "$1" rabbitmq-diagnostics check_port_connectivity >/dev/null 2>&1
}

# rabbit4_start NODE AMQP_PORT DIST_PORT EXTRA_CONF [TIMEOUT]: configure and start NODE unless it
# already runs; waits for its AMQP port (bounded), prints the log tail on failure.
rabbit4_start() {
  local node=$1 port=$2 dist=$3 extra=$4 timeout=${5:-120} base=/var/lib/kmb/$1
  local hostbase=$TREE$base log=$TREE$base/log/$1@localhost.log had_epmd
  had_epmd=$(epmd_pid || true)  # before any Erlang command: each starts an epmd if none runs
  if rabbit4_ctl "$node" rabbitmq-diagnostics ping >/dev/null 2>&1; then
    wait_for 30 "$log" "RabbitMQ 4 node $node AMQP port $port" port_open "$port"
    return 0
  fi
  if port_open "$port" || port_open "$dist"; then
    die "port $port or $dist is taken by something else; RabbitMQ 4 node $node cannot start"
  fi
  tree_mount "$TREE"
  mkdir -p "$hostbase/mnesia" "$hostbase/log"
  { echo "# written by scripts/services (koji-messagebus tests); rewritten at each start"
    echo "listeners.tcp.1 = 127.0.0.1:$port"
    echo "loopback_users = none"
    echo "deprecated_features.permit.amqp_address_v1 = false"
    # a cluster node restarting with this one denied fails to boot on 4.0.5
    # ({failed_to_deny_deprecated_features,[transient_nonexcl_queues]}, seen here): cluster.sh sets 0
    ((${RABBIT4_DENY_TRANSIENT:-1})) && echo "deprecated_features.permit.transient_nonexcl_queues = false"
    echo "log.file.level = info"
    echo "log.console = false"
    printf '%b' "$extra"
  } >"$hostbase/rabbitmq.conf"
  [ -f "$hostbase/advanced.config" ] || echo '[].' >"$hostbase/advanced.config"
  [ -f "$hostbase/enabled_plugins" ] || echo '[].' >"$hostbase/enabled_plugins"
  : >"$hostbase/rabbitmq-env.conf"
  chroot "$TREE" chown -R rabbitmq:rabbitmq "$base"
  # the cookie: one for every node of the tree, made once (the package makes none until first start)
  if [ ! -s "$TREE/var/lib/rabbitmq/.erlang.cookie" ]; then
    openssl rand -hex 20 >"$TREE/var/lib/rabbitmq/.erlang.cookie"
    chroot "$TREE" chown rabbitmq:rabbitmq /var/lib/rabbitmq/.erlang.cookie
    chmod 0400 "$TREE/var/lib/rabbitmq/.erlang.cookie"
  fi
  say "starting RabbitMQ 4 node $node@localhost (AMQP 127.0.0.1:$port, dist $dist)"
  rabbit4_env "$node" "$port" "$dist"
  setsid chroot "$TREE" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "${RABBIT4_ENV[@]}" \
    /usr/sbin/rabbitmq-server >"$STATE/$node.out" 2>&1 </dev/null &
  echo $! >"$STATE/$node.pid"
  record "$node" "$(cat "$STATE/$node.pid")"
  local end=$((SECONDS + timeout))
  while ((SECONDS < end)); do
    if port_open "$port" && rabbit4_ctl "$node" rabbitmq-diagnostics ping >/dev/null 2>&1; then
      record_epmd "$had_epmd"
      return 0
    fi
    if ! kill -0 "$(cat "$STATE/$node.pid")" 2>/dev/null; then break; fi
    sleep 0.5
  done
  printf 'error: RabbitMQ 4 node %s did not come up within %ss; last lines of %s and %s:\n' \
    "$node" "$timeout" "$log" "$STATE/$node.out" >&2
  tail -n 40 "$log" >&2 2>/dev/null || true
  tail -n 20 "$STATE/$node.out" >&2 2>/dev/null || true
  return 1
}

# rabbit4_stop NODE: stop NODE if it runs (rabbitmqctl stop waits for the node's exit).
rabbit4_stop() {
  local node=$1
  [ -d "$TREE" ] || return 0
  if rabbit4_ctl "$node" rabbitmq-diagnostics ping >/dev/null 2>&1; then
    say "stopping RabbitMQ 4 node $node@localhost"
    timeout 60 chroot "$TREE" env HOME=/var/lib/rabbitmq /usr/sbin/rabbitmqctl -n "$node@localhost" -q stop \
      >/dev/null 2>&1 || true
  fi
  local pid
  pid=$(cat "$STATE/$node.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$STATE/$node.pid" "$STATE/started.$node"
}
