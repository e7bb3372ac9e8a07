#!/bin/sh
# Build-time only: migrate an empty database once and dump it, so that a new
# instance's setup job restores a ready schema instead of running every
# migration again (about 9 s of a create on these machines).
set -eu
mkdir -p /run/secrets
echo build-only > /run/secrets/secret_key
echo build-only > /run/secrets/db_password
PG=/usr/lib/postgresql/13/bin
mkdir -p /tmp/pg && chown postgres /tmp/pg
su postgres -c "$PG/initdb -D /tmp/pg -U openslides --auth=trust >/dev/null"
su postgres -c "$PG/pg_ctl -D /tmp/pg -o '-c listen_addresses=127.0.0.1 -k /tmp' -w start >/dev/null"
su postgres -c "$PG/createdb -h 127.0.0.1 -U openslides openslides"
redis-server --daemonize yes --save "" >/dev/null
DB_HOST=127.0.0.1 REDIS_HOST=127.0.0.1 /opt/venv/bin/python -c '
import django
from openslides.utils.main import setup_django_settings_module
setup_django_settings_module()
django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
'
su postgres -c "$PG/pg_dump -h 127.0.0.1 -U openslides --no-owner --no-privileges --inserts openslides" > /seed.sql
grep -q django_migrations /seed.sql
