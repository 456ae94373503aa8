#!/usr/bin/env bash
# PostgreSQL (Debian 12's cluster) on 127.0.0.1:5432, trust auth on loopback, the test database.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
apt_install postgresql
ver=$(ls /etc/postgresql | sort -n | tail -n1)
[ -n "$ver" ] || die "no PostgreSQL cluster in /etc/postgresql"
hba=/etc/postgresql/$ver/main/pg_hba.conf
if ! grep -q '^# koji-messagebus tests' "$hba"; then
  say "PostgreSQL: trust auth on loopback ($hba)"
  tmp=$(mktemp)
  { echo '# koji-messagebus tests: trust on loopback (test machine only)'
    echo 'host all all 127.0.0.1/32 trust'
    echo 'host all all ::1/128 trust'
    echo 'local all all trust'
    cat "$hba"; } >"$tmp"
  cat "$tmp" >"$hba"; rm -f "$tmp"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >/dev/null 2>&1 || true
fi
log=/var/log/postgresql/postgresql-$ver-main.log
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  say "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  wait_for 60 "$log" "PostgreSQL" pg_isready -q -h 127.0.0.1 -p 5432
  record postgresql "$(head -n1 "/var/run/postgresql/$ver-main.pid" 2>/dev/null || true)"
fi
for db in test kmb_bench; do
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
done
say "PostgreSQL $ver ready on 127.0.0.1:5432"
