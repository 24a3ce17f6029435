#!/usr/bin/env bash
# Make a local PostgreSQL server available for the tests: install Debian's package if missing, start the
# cluster, create the role and database the tests use. Idempotent; needs root (CI runs as root).
set -euo pipefail
if [ ! -d /usr/lib/postgresql ] || ! command -v pg_ctlcluster >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
    pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main status >/dev/null 2>&1 || pg_ctlcluster "$version" main start
as_postgres() { su postgres -s /bin/sh -c "$1"; }
as_postgres "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = 'preftrack'\"" | grep -q 1 ||
    as_postgres "psql -qc \"CREATE ROLE preftrack LOGIN PASSWORD 'preftrack' CREATEDB\""
as_postgres "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname = 'preftrack'\"" | grep -q 1 ||
    as_postgres "createdb -O preftrack preftrack"
echo "PostgreSQL $version ready: postgresql://preftrack:preftrack@127.0.0.1:5432/preftrack"
