"""One-off setup job of an OpenSlides instance (3.2 or 3.3): migrate, then set the admin password.

An empty database first gets the schema that the image's build migrated and
dumped (the same migrations, run once at build time), so `migrate` only checks.
Safe to run again: migrations that ran are skipped and the password is set to
the value of the admin_password secret each time. On the database of an older
version (3.2 under the 3.3 image) `migrate` runs the newer migrations: that is
the upgrade. The password is read from the secret file and never passed on a
command line.
"""

from pathlib import Path

import django
from openslides.utils.main import setup_django_settings_module

setup_django_settings_module()
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

SEED = Path("/usr/local/share/hafen/openslides-seed.sql")

with transaction.atomic(), connection.cursor() as cursor:
    cursor.execute("SELECT to_regclass('public.django_migrations')")
    if cursor.fetchone()[0] is None and SEED.exists():
        cursor.execute(SEED.read_text())
        cursor.execute("SELECT pg_catalog.set_config('search_path', 'public', false)")
        print("setup: restored the pre-migrated schema", flush=True)

call_command("migrate", interactive=False, verbosity=1)

password = Path("/run/secrets/admin_password").read_text().strip()
user = get_user_model().objects.get(username="admin")
user.set_password(password)
user.save(skip_autoupdate=True)
print("setup: migrations applied, admin password set", flush=True)
