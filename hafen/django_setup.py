"""Bring Django up for the CLI and the control plane, with the schema migrated."""

import os
from functools import cache
from urllib.parse import urlsplit


@cache
def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hafen.settings")
    import django
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.db.utils import OperationalError

    from hafen.config import get_settings
    from hafen.errors import DatabaseUnavailable

    django.setup()
    try:
        executor = MigrationExecutor(connection)
        behind = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except OperationalError as exc:
        settings = get_settings()
        reason = (str(exc).strip().splitlines() or ["no reason given"])[0]
        password = urlsplit(settings.database_url).password
        if password:
            reason = reason.replace(password, "***")
        raise DatabaseUnavailable(f"the control plane's database does not answer ({settings.database_display}): "
                                  f"{reason}") from exc
    if behind:
        call_command("migrate", interactive=False, verbosity=0)
