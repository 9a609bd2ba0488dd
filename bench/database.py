"""The database a benchmark fills: set up before it runs and dropped after, never one with real data."""

from __future__ import annotations

from collections.abc import Callable


def throwaway_database() -> tuple[str, Callable[[], None]]:
    """Set Django up (settings from the environment) on a database to fill; returns its vendor and what
    drops it again.

    On PostgreSQL, never the database the settings name (it may hold real data): Django's test database
    beside it, as the test runner makes one, created and migrated. Elsewhere, the SQLite file of the
    settings, migrated; nothing drops it (the benchmarks put it in a data directory of their own).
    """
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor != "postgresql":
        call_command("migrate", verbosity=0)
        return connection.vendor, lambda: None
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return connection.vendor, lambda: connection.creation.destroy_test_db(name, verbosity=0)
