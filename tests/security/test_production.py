"""Production settings (``DJANGO_DEBUG=0``): Django's deployment checks pass with nothing silenced, the
responses carry the hardening, secrets have no defaults, and ``QDRANT_API_KEY`` reaches Qdrant.

Each check runs the settings in a fresh process, as a deployment reads them from its environment.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.conftest import REPO

_PREFIXES = ("DJANGO_", "SIMAPP_", "DATABASE_URL", "CELERY_", "QDRANT_")


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a production deployment: DEBUG off, a generated key, its host name."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)}
    return base | {
        "DJANGO_SETTINGS_MODULE": "simapp.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "simapp.example",
        "SIMAPP_DATA_DIR": str(tmp_path / "var"),
        **extra,
    }


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)


def test_check_deploy_passes_with_nothing_silenced(tmp_path: Path) -> None:
    result = check_deploy(production_env(tmp_path))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


def test_check_deploy_fails_when_the_hardening_is_turned_off(tmp_path: Path) -> None:
    # The same check on a deployment that weakened what the defaults set: it must not pass.
    env = production_env(
        tmp_path, DJANGO_SECRET_KEY="x" * 50, DJANGO_HSTS_SECONDS="0", DJANGO_SECURE_SSL_REDIRECT="0"
    )

    result = check_deploy(env)

    assert result.returncode == 1
    assert [w for w in ("security.W004", "security.W008", "security.W009") if w not in result.stderr] == []


@pytest.mark.parametrize(
    "key", ["", "simapp-insecure-development-key-do-not-use-in-production"], ids=["unset", "development"]
)
def test_production_refuses_a_missing_or_the_development_secret_key(tmp_path: Path, key: str) -> None:
    result = check_deploy(production_env(tmp_path, DJANGO_SECRET_KEY=key))

    assert result.returncode == 1
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off, to a long random value" in result.stderr


_RESPONSES = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client, override_settings
client = Client(HTTP_HOST="simapp.example")
plain = client.get("/datasets/")
health = client.get("/healthz")
secure = client.get("/healthz", secure=True)
# The pages name their static files through the manifest that collectstatic writes when the image is
# built (Dockerfile); without one here, the plain storage stands in. Nothing else differs.
with override_settings(STORAGES={**settings.STORAGES, "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}):
    login = client.get("/accounts/login/", secure=True)
other_host = Client(HTTP_HOST="evil.example").get("/healthz", secure=True)
csrf = login.cookies["csrftoken"]
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location")],
    "health": [health.status_code, health.content.decode()],
    "login": login.status_code,
    "headers": {h: secure.get(h) for h in (
        "Strict-Transport-Security", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy",
        "Cross-Origin-Opener-Policy", "Content-Security-Policy")},
    "csrf_cookie": {"secure": csrf["secure"], "samesite": csrf["samesite"]},
    "other_host": other_host.status_code,
    "session_cookie": [settings.SESSION_COOKIE_SECURE, settings.SESSION_COOKIE_HTTPONLY],
    "csrf_setting": settings.CSRF_COOKIE_SECURE,
    "debug": settings.DEBUG,
}))
"""


def test_production_responses_carry_the_hardening(tmp_path: Path) -> None:
    result = run([sys.executable, "-c", _RESPONSES], production_env(tmp_path))

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [301, "https://simapp.example/datasets/"]  # http is redirected to https
    assert seen["health"] == [200, "ok"]  # except the container healthcheck, on plain http
    assert seen["login"] == 200
    assert seen["headers"] == {
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains; preload",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Content-Security-Policy": settings.CONTENT_SECURITY_POLICY,  # tests/browser/test_csp.py: it holds
    }
    assert seen["csrf_cookie"] == {"secure": True, "samesite": "Lax"}
    assert seen["other_host"] == 400  # not in DJANGO_ALLOWED_HOSTS
    assert (seen["session_cookie"], seen["csrf_setting"], seen["debug"]) == ([True, True], True, False)


# -- QDRANT_API_KEY ----------------------------------------------------------------------------------


class StandInQdrant(ThreadingHTTPServer):
    """A stand-in for a Qdrant server on loopback (Qdrant itself is outside our control): it records the
    ``api-key`` header of every request and, as Qdrant with an API key does, answers 401 unless the
    key is right. ``GET /collections`` lists one collection."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.seen: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StandInQdrant

    def do_GET(self) -> None:  # the name http.server calls
        key = self.headers.get("api-key")
        self.server.seen.append((self.path, key))
        if key != self.server.key:
            status, body = (
                401,
                {"status": {"error": "Must provide an API key or an Authorization bearer token"}},
            )
        elif self.path == "/collections":
            status, body = (
                200,
                {"result": {"collections": [{"name": "d.index_v1"}]}, "status": "ok", "time": 0},
            )
        else:
            status, body = 404, {"status": {"error": "Not found"}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def qdrant() -> Iterator[StandInQdrant]:
    server = StandInQdrant(key=secrets.token_urlsafe(24))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


_LIST_COLLECTIONS = """
import django
django.setup()
from apps.training.index import vector_store
from simapp.vectors import VectorStoreUnavailable
try:
    print(vector_store().list_collections())
except VectorStoreUnavailable as exc:
    print("unavailable:", exc)
"""


def test_the_qdrant_api_key_goes_from_the_environment_to_the_server(
    tmp_path: Path, qdrant: StandInQdrant
) -> None:
    env = production_env(tmp_path, QDRANT_URL=qdrant.url, QDRANT_API_KEY=qdrant.key)

    result = run([sys.executable, "-c", _LIST_COLLECTIONS], env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['d.index_v1']"
    assert qdrant.seen == [("/collections", qdrant.key)]


def test_a_wrong_qdrant_api_key_is_named_as_the_problem(tmp_path: Path, qdrant: StandInQdrant) -> None:
    env = production_env(tmp_path, QDRANT_URL=qdrant.url, QDRANT_API_KEY="not-the-key")

    result = run([sys.executable, "-c", _LIST_COLLECTIONS], env)

    assert result.stdout.strip().splitlines()[-1] == (
        f"unavailable: Qdrant at {qdrant.url} refused the request (401); check QDRANT_API_KEY"
    )
    assert qdrant.seen == [("/collections", "not-the-key")]
