#!/usr/bin/env bash
# A local PostgreSQL for the store tests: `start` prints the URL to export as
# PASSAGE_TEST_POSTGRES_URL; `stop` stops the server again if `start` started it.
# Debian's packaging is used as is (pg_ctlcluster), without systemd. Needs root.
set -euo pipefail
STATE=/run/passage-test-postgres.started
ROLE=passage_test

cluster() { pg_lsclusters --no-header 2>/dev/null | awk 'NR==1 {print $1, $2, $3, $4}'; }

start() {
  if ! command -v pg_lsclusters >/dev/null || [ -z "$(cluster)" ]; then
    if ! dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q 'install ok installed'; then
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
    fi
  fi
  if [ -z "$(cluster)" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    pg_createcluster "$version" main >&2
  fi
  read -r version name port status < <(cluster)
  if [ "$status" != online ]; then
    pg_ctlcluster "$version" "$name" start >&2
    touch "$STATE"
  fi
  for _ in $(seq 50); do
    su postgres -c "psql -p $port -Atc 'select 1'" >/dev/null 2>&1 && break
    sleep 0.2
  done
  su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -q" >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$ROLE';
  END IF;
END \$\$;
SQL
  su postgres -c "psql -p $port -Atc \"SELECT 1 FROM pg_database WHERE datname = '$ROLE'\"" | grep -q 1 \
    || su postgres -c "createdb -p $port -O $ROLE $ROLE" >&2
  echo "postgres://$ROLE:$ROLE@127.0.0.1:$port/$ROLE"
}

stop() {
  [ -f "$STATE" ] || return 0
  read -r version name _ _ < <(cluster)
  pg_ctlcluster "$version" "$name" stop >&2 || true
  rm -f "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
