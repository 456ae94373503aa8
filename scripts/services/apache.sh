#!/usr/bin/env bash
# A private Apache httpd + mod_wsgi (Debian's apache2 and libapache2-mod-wsgi-py3) serving the test
# hub (tests/apache/hub.wsgi: kojixmlrpc's request cycle with the plugin loaded by koji.plugin), in
# one of two shapes, each an instance of its own under $STATE/apache-<shape> (ServerRoot, config,
# pid file, error log; loopback port of its own).  The system's apache2 service is never used.
#
#   apache.sh                 install the packages and mod_wsgi's python-home venv only
#   apache.sh prefork         prefork MPM, embedded mode, MaxConnectionsPerChild 50  (127.0.0.1:8761)
#   apache.sh daemon          event MPM, daemon mode processes=4 threads=4 maximum-requests=25 (:8762)
#
# The hub reads $STATE/apache-<shape>/app/hub.conf (kojihub's [hub] DBConnectionString) and
# app/messagebus.conf (the plugin's); the script writes defaults (database `test`, RabbitMQ 3 on
# 5672) only where they are missing, so tests write their own before starting.  Already running:
# left alone.  Control: $STATE/apache-<shape>/apachectl graceful|graceful-stop|stop; stop.sh
# apache-<shape> stops it.  Env: KMB_APACHE_PORT, KMB_APACHE_RECYCLE (MaxConnectionsPerChild or
# maximum-requests: default 50 prefork, 25 daemon, which spreads its requests over 4 processes).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=$STATE/apache-venv
apt_install apache2 libapache2-mod-wsgi-py3 python3-venv

# mod_wsgi runs Debian's /usr/bin/python3: a venv of it is the python-home, with the project's
# dependencies; the project itself comes from this checkout (python-path).
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV (python-home for mod_wsgi)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c 'import koji, proton, psycopg2' 2>/dev/null; then
  say "installing koji, python-qpid-proton, psycopg2 into $VENV"
  "$VENV/bin/python" -m pip install -q koji python-qpid-proton psycopg2-binary
fi
(($#)) || { say "apache2 $(dpkg-query -W -f='${Version}' apache2), mod_wsgi $(dpkg-query -W -f='${Version}' libapache2-mod-wsgi-py3) installed"; exit 0; }

shape=$1
case $shape in
  prefork) port=${KMB_APACHE_PORT:-8761}; recycle=${KMB_APACHE_RECYCLE:-50} ;;
  daemon) port=${KMB_APACHE_PORT:-8762}; recycle=${KMB_APACHE_RECYCLE:-25} ;;
  *) die "unknown shape '$shape' (prefork or daemon)" ;;
esac
name=apache-$shape
dir=$STATE/$name
mods=/usr/lib/apache2/modules
mkdir -p "$dir/app" "$dir/run"
chown www-data:www-data "$dir/run"

# the apachectl of this instance (Debian's apache2ctl reads /etc/apache2; this one reads only $dir)
cat >"$dir/apachectl" <<EOF
#!/bin/sh
# apachectl of the private instance $name: start|graceful|graceful-stop|stop|restart
exec /usr/sbin/apache2 -d "$dir" -f "$dir/httpd.conf" -k "\$@"
EOF
chmod +x "$dir/apachectl"

running() { [ -f "$dir/httpd.pid" ] && kill -0 "$(cat "$dir/httpd.pid")" 2>/dev/null; }
if running; then say "$name already running (PID $(cat "$dir/httpd.pid")) on 127.0.0.1:$port"; exit 0; fi

[ -f "$dir/app/hub.conf" ] || printf '[hub]\nDBConnectionString = dbname=test host=127.0.0.1 user=postgres\n' >"$dir/app/hub.conf"
if [ ! -f "$dir/app/messagebus.conf" ]; then
  printf '[broker]\nhost = 127.0.0.1\nport = 5672\nauth = PLAIN\nusername = guest\npassword = guest\n' >"$dir/app/messagebus.conf"
fi
chown -R www-data:www-data "$dir/app"

{
  cat <<EOF
# private instance $name of koji-messagebus' tests (written by scripts/services/apache.sh)
ServerRoot "$dir"
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile "$dir/httpd.pid"
DefaultRuntimeDir "$dir/run"
Mutex file:$dir/run default
ErrorLog "$dir/error.log"
LogLevel warn wsgi:info
LogFormat "%h %t \"%r\" %>s %D %P" timed
CustomLog "$dir/access.log" timed
User www-data
Group www-data
KeepAlive Off
GracefulShutdownTimeout 60
LoadModule authz_core_module $mods/mod_authz_core.so
LoadModule env_module $mods/mod_env.so
LoadModule wsgi_module $mods/mod_wsgi.so
<Directory />
  Require all denied
</Directory>
<Directory "$ROOT/tests/apache">
  Require all granted
</Directory>
SetEnv koji.hub.ConfigFile "$dir/app/hub.conf"
SetEnv koji.messagebus.ConfigFile "$dir/app/messagebus.conf"
WSGIScriptAlias /kojihub "$ROOT/tests/apache/hub.wsgi"
WSGIApplicationGroup %{GLOBAL}
EOF
  if [ "$shape" = prefork ]; then
    cat <<EOF
LoadModule mpm_prefork_module $mods/mod_mpm_prefork.so
StartServers 2
MinSpareServers 2
MaxSpareServers 4
MaxRequestWorkers 8
MaxConnectionsPerChild $recycle
WSGIPythonHome "$VENV"
WSGIPythonPath "$ROOT"
EOF
  else
    cat <<EOF
LoadModule mpm_event_module $mods/mod_mpm_event.so
ServerLimit 4
StartServers 1
ThreadsPerChild 16
MinSpareThreads 16
MaxSpareThreads 48
MaxRequestWorkers 64
WSGISocketPrefix "$dir/run/wsgi"
WSGIPythonHome "$VENV"
WSGIDaemonProcess kojihub processes=4 threads=4 maximum-requests=$recycle display-name=%{GROUP} python-home="$VENV" python-path="$ROOT"
WSGIProcessGroup kojihub
EOF
  fi
} >"$dir/httpd.conf"

/usr/sbin/apache2 -d "$dir" -f "$dir/httpd.conf" -t >"$dir/configtest.log" 2>&1 \
  || { cat "$dir/configtest.log" >&2; die "$name: httpd.conf does not parse"; }
say "starting $name on 127.0.0.1:$port"
: >"$dir/error.log"
"$dir/apachectl" start >"$dir/start.log" 2>&1 || { cat "$dir/start.log" >&2; tail -n 40 "$dir/error.log" >&2; die "$name did not start"; }
wait_for 30 "$dir/error.log" "$name" bash -c "[ -s '$dir/httpd.pid' ] && kill -0 \$(cat '$dir/httpd.pid') && (exec 3<>/dev/tcp/127.0.0.1/$port)"
record "$name" "$(cat "$dir/httpd.pid")"
say "$name ready on 127.0.0.1:$port (PID $(cat "$dir/httpd.pid"))"
