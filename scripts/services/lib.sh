# Shared helpers for the service scripts (sourced, not run).
# Every start is bounded in time; a failed start prints the service's log tail and returns 1.
say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# STATE: where the scripts keep what they started (PIDs, logs, trees); kept between runs.
STATE=${KMB_STATE_DIR:-/var/tmp/koji-messagebus}
mkdir -p "$STATE"

# wait_for SECONDS LOGFILE DESCRIPTION CMD...: run CMD every 0.5 s until it succeeds or time is up.
wait_for() {
  local seconds=$1 logfile=$2 what=$3; shift 3
  local end=$(( $(date +%s) + seconds ))
  while (( $(date +%s) < end )); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  printf 'error: %s did not come up within %ss; last lines of %s:\n' "$what" "$seconds" "$logfile" >&2
  tail -n 40 "$logfile" >&2 2>/dev/null || true
  return 1
}

# apt_install PKG...: install what is missing (one apt-get update first).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# port_open PORT: something listens on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# record NAME [PID]: remember that these scripts started NAME (so stop.sh stops only those), with
# the service's main PID when known: stop.sh leaves alone a service whose PID is no longer that one
# (it was restarted by someone else since).
record() { echo "${2:-}" >"$STATE/started.$1"; }

# recorded NAME: the PID recorded for NAME (empty when none); fails when NAME was not recorded.
recorded() { [ -f "$STATE/started.$1" ] && cat "$STATE/started.$1"; }

# epmd_pid: the PID of the running Erlang port mapper (every RabbitMQ node registers there), if any:
# the oldest epmd (each Erlang command runs a short-lived `epmd -daemon` that exits when one runs).
epmd_pid() { pgrep -o -x epmd; }

# record_epmd HAD: after an Erlang node started; HAD is what epmd_pid said before the start. If no
# epmd ran then, the node started the one running now: record it, so that stop.sh stops it once
# none of our nodes is left (a developer's own epmd is never recorded).
record_epmd() {
  [ -n "$1" ] && return 0
  [ -e "$STATE/started.epmd" ] && return 0
  local pid
  pid=$(epmd_pid || true)
  [ -n "$pid" ] && record epmd "$pid"
  return 0
}

# maven_fetch GROUP:ARTIFACT:VERSION:TYPE:CLASSIFIER FILE NAME: download FILE (under $STATE/dl)
# from Maven Central with mvn, once; on failure print mvn's log tail and exit.
maven_fetch() {
  local artifact=$1 file=$2 name=$3
  [ -f "$file" ] && return 0
  say "mvn dependency:copy $artifact"
  mkdir -p "$STATE/dl"
  mvn -q -B dependency:copy -Dartifact="$artifact" -DoutputDirectory="$STATE/dl" >"$STATE/mvn-$name.log" 2>&1 \
    || { tail -n 30 "$STATE/mvn-$name.log" >&2; die "could not fetch $artifact from Maven Central"; }
  [ -f "$file" ] || die "mvn fetched $artifact but $file is not there (see $STATE/mvn-$name.log)"
}
