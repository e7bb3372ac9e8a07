#!/bin/sh
# Initialise the cluster on first start, then run the server in the foreground.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=postgres}"
: "${POSTGRES_PASSWORD_FILE:=/run/secrets/db_password}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$POSTGRES_DB" != "postgres" ]; then
        createdb -U "$POSTGRES_USER" "$POSTGRES_DB"
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "hafen-postgres: initialised database $POSTGRES_DB"
fi
# Autovacuum looks at each database every 5 minutes, not every minute: its workers were more than half of an idle
# server's own CPU (0.5 of 0.8 ms a second, measured without probes).
exec postgres -D "$PGDATA" -c listen_addresses='*' -c max_connections=100 -c autovacuum_naptime=5min
