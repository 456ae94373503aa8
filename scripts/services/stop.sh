#!/usr/bin/env bash
# Stop what scripts/services/*.sh started (their record marks), and nothing else: a service that
# was already running (a developer's own) has no mark and is left alone, and so is one whose PID
# is no longer the recorded one.  `stop.sh NAME...` stops only those (names as recorded:
# postgresql rabbitmq3 rabbit4 rabbitc1 rabbitc2 rabbitc3 artemis brokerj apache-prefork apache-daemon).  Never fails the run.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/rabbitmq4-lib.sh"

if (($#)); then names=("$@"); else
  names=()
  for mark in "$STATE"/started.*; do [ -e "$mark" ] && names+=("${mark##*/started.}"); done
fi

# stop_pid NAME PID SECONDS: TERM, wait (bounded), then KILL.
stop_pid() {
  local name=$1 pid=$2 seconds=$3
  kill -0 "$pid" 2>/dev/null || return 0
  say "stopping $name (PID $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  local end=$((SECONDS + seconds))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < end)); do sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then say "$name did not stop within ${seconds}s: KILL"; kill -KILL "$pid" 2>/dev/null; fi
}

# same NAME CURRENT_PID: the running service is the one the scripts recorded (no PID recorded: yes)
same() {
  local want
  want=$(recorded "$1") || return 1
  [ -z "$want" ] || [ "$want" = "$2" ]
}

# stale NAME: the mark is older than what runs now (or nothing runs): leave it alone
stale() { say "$1: not running as recorded (stale mark), left alone"; }

for name in "${names[@]}"; do
  [ -e "$STATE/started.$name" ] || { say "$name: not started by these scripts, left alone"; continue; }
  case $name in
    epmd) continue ;;  # below, once no Erlang node of ours is left
    postgresql)
      ver=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -n1)
      pid=$(head -n1 "/var/run/postgresql/$ver-main.pid" 2>/dev/null || true)
      if [ -n "$pid" ] && same postgresql "$pid"; then
        say "stopping PostgreSQL $ver"
        timeout 60 pg_ctlcluster --skip-systemctl-redirect "$ver" main stop || true
      else stale postgresql; fi ;;
    rabbitmq3)
      pid=$(timeout 20 rabbitmqctl -q eval 'os:getpid().' 2>/dev/null | tr -dc 0-9)
      if [ -n "$pid" ] && same rabbitmq3 "$pid"; then
        say "stopping RabbitMQ 3"
        timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || true
      else stale rabbitmq3; fi ;;
    rabbit4* | rabbitc[0-9]*)
      pid=$(cat "$STATE/$name.pid" 2>/dev/null || true)
      if [ -n "$pid" ] && same "$name" "$pid"; then rabbit4_stop "$name"; else stale "$name"; fi ;;
    artemis | brokerj)
      pid=$(cat "$STATE/$name.pid" 2>/dev/null || true)
      if [ -n "$pid" ] && same "$name" "$pid"; then stop_pid "$name" "$pid" 30; else stale "$name"; fi
      rm -f "$STATE/$name.pid" ;;
    apache-*)  # the private httpd instances of apache.sh: their own apachectl, then the pid (bounded)
      pid=$(cat "$STATE/$name/httpd.pid" 2>/dev/null || true)
      if [ -n "$pid" ] && same "$name" "$pid" && kill -0 "$pid" 2>/dev/null; then
        timeout 30 "$STATE/$name/apachectl" stop >/dev/null 2>&1 || true
        stop_pid "$name" "$pid" 30
      else stale "$name"; fi ;;
    *) say "$name: unknown service mark, left alone"; continue ;;
  esac
  rm -f "$STATE/started.$name"
done

# tree_node_runs: a RabbitMQ 4 node of the tree (rabbitmq4.sh, cluster.sh) still runs
tree_node_runs() {
  local pidfile
  for pidfile in "$STATE"/rabbit4*.pid "$STATE"/rabbitc*.pid; do
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && return 0
  done
  return 1
}

# the trees' /proc, once no node of the tree runs
if [ -d "$TREE/proc" ] && mountpoint -q "$TREE/proc"; then
  tree_node_runs || tree_umount "$TREE"
fi
# Erlang's port mapper, when a node of ours started it and no node of ours runs any more: by its
# recorded PID (epmd refuses `-kill` while nodes are registered; so do we, by checking ours first)
if [ -e "$STATE/started.epmd" ]; then
  pid=$(recorded epmd)
  if [ -e "$STATE/started.rabbitmq3" ] || tree_node_runs; then say "epmd: a RabbitMQ node of ours still runs, left alone"
  elif [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = epmd ]; then
    stop_pid epmd "$pid" 10; rm -f "$STATE/started.epmd"
  else stale epmd; rm -f "$STATE/started.epmd"; fi
fi
exit 0
