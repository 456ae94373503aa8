#!/usr/bin/env bash
# ActiveMQ Artemis 2.40.0 (bin zip from Maven Central) as an instance of its own: AMQP on
# 127.0.0.1:5680, AMQP over TLS on :5682 (the test CA of .ci/rabbitmq-tls.sh, when it made one),
# AMQP with SCRAM-SHA-256/512 only on :5683, the core protocol on :61626 (Artemis' own tools); user
# admin/admin (role amq), anonymous allowed (role amq) when no credentials are given, no web console.  Addresses and queues are auto-created (Artemis' default).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
VERSION=${KMB_ARTEMIS_VERSION:-2.40.0}
PORT=${KMB_ARTEMIS_PORT:-5680}
TLS_PORT=${KMB_ARTEMIS_TLS_PORT:-5682}
SCRAM_PORT=${KMB_ARTEMIS_SCRAM_PORT:-5683}
CORE_PORT=${KMB_ARTEMIS_CORE_PORT:-61626}
TLS_DIR=${KMB_TLS_DIR:-/var/lib/koji-messagebus-test/tls}
HOMEDIR=$STATE/apache-artemis-$VERSION
INST=$STATE/artemis-instance
LOG=$INST/log/artemis.log
PIDFILE=$STATE/artemis.pid
apt_install openjdk-17-jre-headless maven unzip

# the distribution: Maven Central through mvn, unpacked once
zip=$STATE/dl/apache-artemis-$VERSION-bin.zip
maven_fetch "org.apache.activemq:apache-artemis:$VERSION:zip:bin" "$zip" artemis
if [ ! -x "$HOMEDIR/bin/artemis" ]; then
  rm -rf "$HOMEDIR" "$HOMEDIR.tmp"
  mkdir -p "$HOMEDIR.tmp"
  unzip -q "$zip" -d "$HOMEDIR.tmp"
  mv "$HOMEDIR.tmp/apache-artemis-$VERSION" "$HOMEDIR"
  rm -rf "$HOMEDIR.tmp"
fi

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# the instance: made once per version and port layout (a stamp says which)
stamp="kmb-artemis-v3 $VERSION $PORT $TLS_PORT $CORE_PORT"
if [ "$(cat "$INST/.kmb-stamp" 2>/dev/null)" != "$stamp" ]; then
  if running; then  # an instance of an older layout: stop it (bounded) before it is remade
    kill -TERM "$(cat "$PIDFILE")" 2>/dev/null || true
    for _ in $(seq 1 60); do running || break; sleep 0.5; done
    running && die "the running Artemis (PID $(cat "$PIDFILE")) did not stop"
  fi
  rm -rf "$INST"
  say "artemis create $INST"
  "$HOMEDIR/bin/artemis" create "$INST" --silent --force --user admin --password admin --role amq \
    --allow-anonymous --no-web --host 127.0.0.1 --default-port "$CORE_PORT" --java-memory 512M \
    --no-hornetq-acceptor --no-mqtt-acceptor --no-stomp-acceptor --no-amqp-acceptor --no-autotune \
    >"$STATE/artemis-create.log" 2>&1 || { tail -n 30 "$STATE/artemis-create.log" >&2; die "artemis create failed"; }
  # anonymous only when no credentials are given: a wrong password must fail, not fall back to guest
  sed -i 's/\(GuestLoginModule sufficient\)/\1\n       credentialsInvalidate=true/' "$INST/etc/login.config"
  grep -q credentialsInvalidate=true "$INST/etc/login.config" || die "could not edit $INST/etc/login.config"
  # SCRAM-SHA-256/512 (its own acceptor: the login scope is per acceptor): user admin, password admin
  java -cp "$HOMEDIR/lib/*" org.apache.activemq.artemis.spi.core.security.jaas.SCRAMPropertiesLoginModule \
    admin admin 4096 2>/dev/null | grep '^admin' >"$INST/etc/artemis-users-scram.properties" \
    || die "could not make the SCRAM user entry"
  echo 'amq = admin' >"$INST/etc/artemis-roles-scram.properties"
  cat >>"$INST/etc/login.config" <<'SCRAM'

amqp-sasl-scram {
   org.apache.activemq.artemis.spi.core.security.jaas.SCRAMPropertiesLoginModule required
       org.apache.activemq.jaas.properties.user="artemis-users-scram.properties"
       org.apache.activemq.jaas.properties.role="artemis-roles-scram.properties";
};
SCRAM
  echo "$stamp" >"$INST/.kmb-stamp"
fi

# acceptors (rewritten each start, so a new certificate is picked up): AMQP, AMQP over TLS
acceptors="<acceptor name=\"amqp\">tcp://127.0.0.1:$PORT?protocols=AMQP;saslMechanisms=PLAIN,ANONYMOUS,EXTERNAL;amqpMinLargeMessageSize=102400;amqpCredits=1000;amqpLowCredits=300;amqpDuplicateDetection=true</acceptor>"
acceptors+="<acceptor name=\"amqp-scram\">tcp://127.0.0.1:$SCRAM_PORT?protocols=AMQP;saslMechanisms=SCRAM-SHA-256,SCRAM-SHA-512;saslLoginConfigScope=amqp-sasl-scram</acceptor>"
if [ -f "$TLS_DIR/server.pem" ]; then
  openssl pkcs12 -export -in "$TLS_DIR/server.pem" -inkey "$TLS_DIR/server.key" -passout pass:kmbtest \
    -out "$INST/etc/server.p12"
  # the CA as a PKCS#12 trust store (Java needs the trusted-certificate attribute: keytool sets it)
  rm -f "$INST/etc/ca.p12"
  keytool -importcert -noprompt -alias kmb-ca -file "$TLS_DIR/ca.pem" -keystore "$INST/etc/ca.p12" \
    -storetype PKCS12 -storepass kmbtest >/dev/null 2>&1
  acceptors+="<acceptor name=\"amqps\">tcp://127.0.0.1:$TLS_PORT?protocols=AMQP;sslEnabled=true;keyStorePath=$INST/etc/server.p12;keyStorePassword=kmbtest;keyStoreType=PKCS12;trustStorePath=$INST/etc/ca.p12;trustStorePassword=kmbtest;trustStoreType=PKCS12;wantClientAuth=true;saslMechanisms=PLAIN,ANONYMOUS,EXTERNAL</acceptor>"
fi
python3 - "$INST/etc/broker.xml" "$acceptors" <<'PY'
import re, sys
path, extra = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r'\s*<acceptor name="(amqp|amqps|amqp-scram)">.*?</acceptor>', "", text, flags=re.S)
text = text.replace("</acceptors>", extra + "\n      </acceptors>", 1)
open(path, "w").write(text)
PY

if running && port_open "$PORT"; then
  say "Artemis $VERSION already running (PID $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
  exit 0
fi
port_open "$PORT" && die "127.0.0.1:$PORT is taken by something else; Artemis cannot start"
say "starting Artemis $VERSION ($INST)"
mkdir -p "$INST/log"
setsid "$INST/bin/artemis" run >"$STATE/artemis.out" 2>&1 </dev/null &
echo $! >"$PIDFILE"
record artemis "$(cat "$PIDFILE")"
end=$((SECONDS + 90))
until port_open "$PORT" && port_open "$SCRAM_PORT"; do
  if ! running || ((SECONDS >= end)); then
    printf 'error: Artemis did not come up on %s within 90 s; last lines of %s and %s:\n' "$PORT" "$LOG" \
      "$STATE/artemis.out" >&2
    tail -n 40 "$LOG" >&2 2>/dev/null || true
    tail -n 20 "$STATE/artemis.out" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 0.5
done
if [ -f "$TLS_DIR/server.pem" ]; then wait_for 30 "$LOG" "Artemis AMQP TLS acceptor on $TLS_PORT" port_open "$TLS_PORT"; fi
say "Artemis $VERSION ready on 127.0.0.1:$PORT (TLS :$TLS_PORT, SCRAM :$SCRAM_PORT, admin/admin, PID $(cat "$PIDFILE"))"
