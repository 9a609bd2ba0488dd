"""Settings come from the environment, with defaults that need no services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

_PROBE = (
    "import json, django; from django.conf import settings; django.setup();"
    "db = settings.DATABASES['default'];"
    "print(json.dumps({'engine': db['ENGINE'], 'name': str(db['NAME']), 'debug': settings.DEBUG,"
    " 'hosts': settings.ALLOWED_HOSTS, 'data_dir': str(settings.DATA_DIR),"
    " 'upload': settings.SIMAPP_MAX_UPLOAD_BYTES, 'secure_cookie': getattr(settings, 'SESSION_COOKIE_SECURE', False)}))"
)
_SIMAPP_VARS = (
    "DATABASE_URL",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "CELERY_BROKER_URL",
    "QDRANT_URL",
    "SIMAPP_DATA_DIR",
    "DJANGO_ALLOWED_HOSTS",
    "SIMAPP_MAX_UPLOAD_MB",
)


def probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _SIMAPP_VARS}
    base |= {"DJANGO_SETTINGS_MODULE": "simapp.settings", "SIMAPP_DATA_DIR": str(tmp_path / "var")}
    return subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, env=base | env, capture_output=True, text=True, timeout=60
    )


def test_defaults_use_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    result = probe(tmp_path)

    settings = json.loads(result.stdout)
    assert settings["engine"] == "django.db.backends.sqlite3"
    assert settings["name"] == str(tmp_path / "var" / "db.sqlite3") and settings["debug"] is True
    assert settings["upload"] == 100 * 1024 * 1024


def test_database_url_selects_postgres(tmp_path: Path) -> None:
    result = probe(
        tmp_path, DATABASE_URL="postgres://simapp:pw@db.example:5433/simapp", SIMAPP_MAX_UPLOAD_MB="5"
    )

    settings = json.loads(result.stdout)
    assert (settings["engine"], settings["name"], settings["upload"]) == (
        "django.db.backends.postgresql",
        "simapp",
        5 * 1024 * 1024,
    )


def test_production_requires_a_secret_key(tmp_path: Path) -> None:
    refused = probe(tmp_path, DJANGO_DEBUG="0")
    accepted = probe(
        tmp_path, DJANGO_DEBUG="0", DJANGO_SECRET_KEY="x" * 50, DJANGO_ALLOWED_HOSTS="simapp.example"
    )

    assert (
        refused.returncode != 0 and "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in refused.stderr
    )
    settings = json.loads(accepted.stdout)
    assert (settings["debug"], settings["hosts"], settings["secure_cookie"]) == (
        False,
        ["simapp.example"],
        True,
    )


def test_malformed_values_and_a_broker_without_qdrant_are_refused_with_the_reason(tmp_path: Path) -> None:
    bad_bool = probe(tmp_path, DJANGO_DEBUG="maybe")
    bad_int = probe(tmp_path, SIMAPP_MAX_UPLOAD_MB="lots")
    broker = probe(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:6379/0")

    assert "DJANGO_DEBUG='maybe' is not a boolean" in bad_bool.stderr
    assert "SIMAPP_MAX_UPLOAD_MB='lots' is not an integer" in bad_int.stderr
    assert "the embedded vector store can be opened by one process only" in broker.stderr
