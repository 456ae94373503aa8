#!/usr/bin/env bash
# Test TLS for the local RabbitMQ 3.10 (run by scripts/setup.sh; idempotent, ~1 s when already done).
#
# Generates, under $KMB_TLS_DIR (default /var/lib/koji-messagebus-test/tls):
#   ca.pem/ca.key                 the test CA
#   server.pem/server.key         localhost + 127.0.0.1, served on 127.0.0.1:5671
#   wrong-name.pem/.key           a valid cert of the same CA for wrong-name.invalid only, on 127.0.0.1:5681
#   client.pem/client.key         CN=kmb-client (RabbitMQ user for EXTERNAL, may not write to kmb-denied-*
#                                 exchanges); client-combined.pem = both in one file
#   untrusted-ca.pem/.key         a second CA nobody trusts; untrusted-client.pem/.key signed by it
#   nobody-client.pem/.key        CN=kmb-nobody, signed by the test CA, but no such RabbitMQ user
#   kmb-user.password             password of the RabbitMQ user kmb-user (PLAIN over TLS)
# and configures the running broker WITHOUT a restart (rabbitmqctl eval): application env
# auth_mechanisms (PLAIN AMQPLAIN EXTERNAL ANONYMOUS), ssl_cert_login_from = common_name,
# ssl_options (verify_peer, fail_if_no_peer_cert = false), and the TLS listeners.  The AMQP 1.0
# plugin serves AMQP 1.0 on every listener.  Nothing is written to /etc/rabbitmq except the
# enabled_plugins file (rabbitmq_auth_mechanism_ssl).  After a broker restart, run it again.
set -euo pipefail
DIR=${KMB_TLS_DIR:-/var/lib/koji-messagebus-test/tls}
DIR=${DIR%/}
PORT=5671
WRONG_PORT=5681
STAMP="kmb-tls-v3 $PORT $WRONG_PORT"
say() { printf '==> rabbitmq-tls: %s\n' "$*"; }

certs_ok() {
  [ -f "$DIR/stamp" ] && [ "$(cat "$DIR/stamp")" = "$STAMP" ] || return 1
  local f
  for f in ca server wrong-name client untrusted-ca untrusted-client nobody-client; do
    openssl x509 -noout -checkend 604800 -in "$DIR/$f.pem" >/dev/null 2>&1 || return 1
  done
}

# leaf NAME CA SUBJECT EXTENSIONS: key + certificate signed by CA
leaf() {
  local name=$1 ca=$2 subj=$3 ext=$4
  openssl req -new -newkey rsa:2048 -nodes -keyout "$DIR/$name.key" -out "$DIR/$name.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$DIR/$name.csr" -CA "$DIR/$ca.pem" -CAkey "$DIR/$ca.key" -days 3650 \
    -set_serial "0x$(openssl rand -hex 12)" -extfile <(printf '%b' "$ext") -out "$DIR/$name.pem" 2>/dev/null
  rm -f "$DIR/$name.csr"
}

make_certs() {
  say "generating the test CA and certificates in $DIR"
  install -d -m 0755 "$(dirname "$DIR")"
  rm -rf "$DIR"
  install -d -m 0755 "$DIR"
  local ca_ext='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash'
  local server_ext='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth'
  local client_ext='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth'
  for ca in ca untrusted-ca; do  # self-signed: key, request, then signed with its own key
    openssl req -new -newkey rsa:2048 -nodes -keyout "$DIR/$ca.key" -out "$DIR/$ca.csr" \
      -subj "/O=koji-messagebus tests/CN=koji-messagebus $ca" 2>/dev/null
    openssl x509 -req -in "$DIR/$ca.csr" -signkey "$DIR/$ca.key" -days 3650 -extfile <(printf '%b' "$ca_ext") \
      -set_serial "0x$(openssl rand -hex 12)" -out "$DIR/$ca.pem" 2>/dev/null
    rm -f "$DIR/$ca.csr"
  done
  leaf server ca "/O=koji-messagebus tests/CN=localhost" "$server_ext\nsubjectAltName=DNS:localhost,IP:127.0.0.1"
  leaf wrong-name ca "/O=koji-messagebus tests/CN=wrong-name.invalid" "$server_ext\nsubjectAltName=DNS:wrong-name.invalid"
  leaf client ca "/O=koji-messagebus tests/CN=kmb-client" "$client_ext"
  leaf untrusted-client untrusted-ca "/O=koji-messagebus tests/CN=kmb-client" "$client_ext"
  leaf nobody-client ca "/O=koji-messagebus tests/CN=kmb-nobody" "$client_ext"
  cat "$DIR/client.pem" "$DIR/client.key" >"$DIR/client-combined.pem"
  openssl rand -hex 16 | sed 's/^/kmb-/' >"$DIR/kmb-user.password"
  chmod 0644 "$DIR"/*.pem
  chmod 0600 "$DIR"/*.key "$DIR/client-combined.pem" "$DIR/kmb-user.password"
  # the broker (user rabbitmq) reads its own keys
  chgrp rabbitmq "$DIR/server.key" "$DIR/wrong-name.key" 2>/dev/null && chmod 0640 "$DIR/server.key" "$DIR/wrong-name.key"
  echo "$STAMP" >"$DIR/stamp"
}

# Erlang run on the broker node: prints `ready` when everything is configured.
check_expr="
Certs = [{P, proplists:get_value(certfile, O)}
         || {listener, _, 'amqp/ssl', _, {127,0,0,1}, P, O} <- rabbit_networking:active_listeners()],
Users = [U || U <- [<<\"kmb-client\">>, <<\"kmb-user\">>],
              element(1, rabbit_auth_backend_internal:lookup_user(U)) =:= ok],
Ok = lists:member({$PORT, \"$DIR/server.pem\"}, Certs)
     andalso lists:member({$WRONG_PORT, \"$DIR/wrong-name.pem\"}, Certs)
     andalso lists:keymember(rabbitmq_auth_mechanism_ssl, 1, application:which_applications())
     andalso application:get_env(rabbit, ssl_cert_login_from) =:= {ok, common_name}
     andalso lists:member('EXTERNAL', element(2, application:get_env(rabbit, auth_mechanisms)))
     andalso length(Users) =:= 2,
case Ok of true -> io:format(\"ready~n\"); false -> io:format(\"not-ready ~p~n\", [Certs]) end."

regenerated=false
if ! certs_ok; then
  make_certs
  regenerated=true
fi
if [ "$regenerated" = false ] && rabbitmqctl -q eval "$check_expr" 2>/dev/null | grep -q '^ready'; then
  exit 0
fi

say "configuring the TLS listeners on 127.0.0.1:$PORT and :$WRONG_PORT (no restart)"
if ! rabbitmq-plugins -q list -e rabbitmq_auth_mechanism_ssl 2>/dev/null | grep -q rabbitmq_auth_mechanism_ssl; then
  rabbitmq-plugins -q enable rabbitmq_auth_mechanism_ssl >/dev/null
fi
users=$(rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}')
for user in kmb-client kmb-user; do
  if ! grep -qx "$user" <<<"$users"; then
    rabbitmqctl -q add_user "$user" "$(openssl rand -hex 16)" >/dev/null
  fi
done
rabbitmqctl -q set_permissions -p / kmb-user '.*' '.*' '.*' >/dev/null
# kmb-client may not write to exchanges named kmb-denied-*: shows the broker knows who logged in
rabbitmqctl -q set_permissions -p / kmb-client '.*' '^(?!kmb-denied-).*' '.*' >/dev/null
rabbitmqctl -q clear_password kmb-client >/dev/null  # EXTERNAL only: it has no password
rabbitmqctl -q change_password kmb-user "$(cat "$DIR/kmb-user.password")" >/dev/null

setup_expr="
F = fun(Name) -> filename:join(\"$DIR\", Name) end,
Base = [{cacertfile, F(\"ca.pem\")}, {verify, verify_peer}, {fail_if_no_peer_cert, false}],
Main = Base ++ [{certfile, F(\"server.pem\")}, {keyfile, F(\"server.key\")}],
Wrong = Base ++ [{certfile, F(\"wrong-name.pem\")}, {keyfile, F(\"wrong-name.key\")}],
ok = application:set_env(rabbit, auth_mechanisms, ['PLAIN', 'AMQPLAIN', 'EXTERNAL', 'ANONYMOUS']),
ok = application:set_env(rabbit, ssl_cert_login_from, common_name),
ok = application:set_env(rabbit, ssl_options, Main),
ok = application:set_env(rabbit, ssl_listeners, [{\"127.0.0.1\", $PORT}]),
_ = rabbit_networking:ensure_ssl(),
Current = [{P, proplists:get_value(certfile, O)}
           || {listener, _, 'amqp/ssl', _, {127,0,0,1}, P, O} <- rabbit_networking:active_listeners()],
Regenerated = $regenerated,
ssl:clear_pem_cache(),
Start = fun(Port, Opts) ->
    Want = proplists:get_value(certfile, Opts),
    Run = fun() -> rabbit_networking:start_ssl_listener({\"127.0.0.1\", Port},
                                                        rabbit_networking:fix_ssl_options(Opts), 2) end,
    case lists:keyfind(Port, 1, Current) of
        {Port, Want} when not Regenerated -> ok;
        {Port, _} -> ok = rabbit_networking:stop_tcp_listener({\"127.0.0.1\", Port}), Run();
        false -> Run()
    end
end,
io:format(\"~p~n\", [{Start($PORT, Main), Start($WRONG_PORT, Wrong)}])."
out=$(rabbitmqctl -q eval "$setup_expr" 2>&1) || { echo "$out" >&2; exit 1; }
if ! rabbitmqctl -q eval "$check_expr" | grep -q '^ready'; then
  say "FAILED: $out" >&2
  rabbitmqctl -q eval "$check_expr" >&2
  exit 1
fi
say "ready: amqps://localhost:$PORT (CA $DIR/ca.pem), wrong-name listener on :$WRONG_PORT"
