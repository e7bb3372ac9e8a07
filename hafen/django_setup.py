"""Bring Django up for the CLI and the control plane, with the schema migrated."""

import os
from functools import cache


@cache
def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hafen.settings")
    import django
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    django.setup()
    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        call_command("migrate", interactive=False, verbosity=0)
