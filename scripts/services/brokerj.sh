#!/usr/bin/env bash
# Qpid Broker-J 9.2.0 (bin tarball from Maven Central: org.apache.qpid:apache-qpid-broker-j) with
# AMQP 1.0 on 127.0.0.1:5690 and AMQP 1.0 over TLS on :5691 (the test CA of .ci/rabbitmq-tls.sh,
# when it made one); users guest/guest and admin/admin (Plain provider: PLAIN also without TLS,
# SCRAM-SHA-1/256, CRAM-MD5); one virtual host `default` on a Derby store (a memory store refuses durable messages; any AMQP
# hostname lands there);
# no HTTP management.  Its work directory is made afresh at each start from the initial config.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
VERSION=${KMB_BROKERJ_VERSION:-9.2.0}
PORT=${KMB_BROKERJ_PORT:-5690}
TLS_PORT=${KMB_BROKERJ_TLS_PORT:-5691}
TLS_DIR=${KMB_TLS_DIR:-/var/lib/koji-messagebus-test/tls}
HOMEDIR=$STATE/qpid-broker-j-$VERSION
WORK=$STATE/brokerj-work
PIDFILE=$STATE/brokerj.pid
LOG=$WORK/log/qpid.log
apt_install openjdk-17-jre-headless maven

tgz=$STATE/dl/apache-qpid-broker-j-$VERSION-bin.tar.gz
maven_fetch "org.apache.qpid:apache-qpid-broker-j:$VERSION:tar.gz:bin" "$tgz" brokerj
if [ ! -x "$HOMEDIR/bin/qpid-server" ]; then
  rm -rf "$HOMEDIR" "$HOMEDIR.tmp"
  mkdir -p "$HOMEDIR.tmp"
  tar xzf "$tgz" -C "$HOMEDIR.tmp"
  mv "$HOMEDIR.tmp/qpid-broker/$VERSION" "$HOMEDIR"
  rm -rf "$HOMEDIR.tmp"
fi

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
if running && port_open "$PORT"; then
  say "Qpid Broker-J $VERSION already running (PID $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
  exit 0
fi
port_open "$PORT" && die "127.0.0.1:$PORT is taken by something else; Broker-J cannot start"

rm -rf "$WORK"
mkdir -p "$WORK/log"
tls_keystore="" tls_port=""
if [ -f "$TLS_DIR/server.pem" ]; then
  openssl pkcs12 -export -in "$TLS_DIR/server.pem" -inkey "$TLS_DIR/server.key" -passout pass:kmbtest \
    -out "$WORK/server.p12"
  tls_keystore=', "keystores": [{"name": "kmb-server", "type": "FileKeyStore", "storeUrl": "'"$WORK/server.p12"'",
                     "password": "kmbtest", "keyStoreType": "PKCS12"}]'
  tls_port=', {"name": "AMQPS", "port": '"$TLS_PORT"', "bindingAddress": "127.0.0.1", "protocols": ["AMQP_1_0"],
              "transports": ["SSL"], "keyStore": "kmb-server", "authenticationProvider": "plain",
              "virtualhostaliases": [{"name": "nameAlias", "type": "nameAlias"},
                                     {"name": "defaultAlias", "type": "defaultAlias"},
                                     {"name": "hostnameAlias", "type": "hostnameAlias"}]}'
fi
cat >"$WORK/initial-config.json" <<JSON
{
  "name": "kmb-brokerj",
  "modelVersion": "9.0",
  "authenticationproviders": [{"name": "plain", "type": "Plain", "secureOnlyMechanisms": [], "users": [
      {"name": "guest", "type": "managed", "password": "guest"},
      {"name": "admin", "type": "managed", "password": "admin"}]}]$tls_keystore,
  "brokerloggers": [{"name": "logfile", "type": "File", "fileName": "$LOG",
      "brokerloginclusionrules": [
        {"name": "Root", "type": "NameAndLevel", "level": "WARN", "loggerName": "ROOT"},
        {"name": "Qpid", "type": "NameAndLevel", "level": "INFO", "loggerName": "org.apache.qpid.*"},
        {"name": "Operational", "type": "NameAndLevel", "level": "INFO", "loggerName": "qpid.message.*"}]}],
  "ports": [{"name": "AMQP", "port": $PORT, "bindingAddress": "127.0.0.1", "protocols": ["AMQP_1_0"],
             "authenticationProvider": "plain",
             "virtualhostaliases": [{"name": "nameAlias", "type": "nameAlias"},
                                    {"name": "defaultAlias", "type": "defaultAlias"},
                                    {"name": "hostnameAlias", "type": "hostnameAlias"}]}$tls_port],
  "virtualhostnodes": [{"name": "default", "type": "JSON", "defaultVirtualHostNode": "true",
                        "virtualHostInitialConfiguration": "{\"type\": \"DERBY\"}"}]
}
JSON

say "starting Qpid Broker-J $VERSION (work dir $WORK)"
cd "$WORK"  # Derby writes derby.log into the current directory
QPID_WORK=$WORK QPID_PID_FILENAME=qpid-server.pid QPID_JAVA_MEM="-Xmx384m -XX:MaxDirectMemorySize=256m" \
  setsid "$HOMEDIR/bin/qpid-server" -icp "$WORK/initial-config.json" >"$STATE/brokerj.out" 2>&1 </dev/null &
echo $! >"$PIDFILE"
record brokerj "$(cat "$PIDFILE")"
end=$((SECONDS + 90))
ready() { port_open "$PORT" && { [ -z "$tls_port" ] || port_open "$TLS_PORT"; } && grep -q 'BRK-1004' "$LOG" 2>/dev/null; }
until ready; do
  if ! running || ((SECONDS >= end)); then
    printf 'error: Broker-J did not come up on %s within 90 s; last lines of %s and %s:\n' "$PORT" "$LOG" \
      "$STATE/brokerj.out" >&2
    tail -n 40 "$LOG" >&2 2>/dev/null || true
    tail -n 20 "$STATE/brokerj.out" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 0.5
done
say "Qpid Broker-J $VERSION ready on 127.0.0.1:$PORT${tls_port:+ (TLS :$TLS_PORT)} (guest/guest, PID $(cat "$PIDFILE"))"
