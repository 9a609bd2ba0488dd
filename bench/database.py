"""The database a benchmark fills: set up before it runs and dropped after, never one with real data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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


def database_url(settings_dict: dict[str, Any]) -> str:
    """A ``DATABASE_URL`` for another process (a server, a worker) that opens the database of
    ``settings_dict`` (an entry of Django's ``DATABASES``)."""
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{settings_dict['NAME']}"
    auth = settings_dict["USER"] + (f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    return f"postgres://{auth}@{host}:{settings_dict.get('PORT') or 5432}/{settings_dict['NAME']}"
