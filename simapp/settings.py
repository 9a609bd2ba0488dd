"""simapp settings: one module, every knob from the environment (see .env.example).

The defaults make a bare ``python manage.py runserver`` work with no services: SQLite and the embedded
vector engine under ``var/``, jobs in a background thread of the web process. Production sets
``DATABASE_URL``, ``CELERY_BROKER_URL``, ``QDRANT_URL`` and turns ``DJANGO_DEBUG`` off, which makes a
real ``DJANGO_SECRET_KEY`` mandatory.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from simapp.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", True)

# Development only: DEBUG is on, so this key never signs anything that matters. It is public (it is right
# here), so production refuses it as well as no key; `check --deploy` refuses short or repetitive ones.
_DEVELOPMENT_SECRET_KEY = "simapp-insecure-development-key-do-not-use-in-production"
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not DEBUG and SECRET_KEY in ("", _DEVELOPMENT_SECRET_KEY):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off, to a long random value of its own "
        '(python -c "import secrets; print(secrets.token_urlsafe(50))")'
    )
SECRET_KEY = SECRET_KEY or _DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# Where the embedding cache, model artifacts, the embedded vector store and the default SQLite live.
DATA_DIR = Path(env_str("SIMAPP_DATA_DIR", str(BASE_DIR / "var"))).resolve()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "apps.datasets",
    "apps.labelling",
    "apps.training",
    "apps.discovery",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "apps.common.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Scripts, fonts, connections and frames only from this site; no plugins, no <base>, forms post here.
# Inline styles are allowed (style attributes, htmx's indicator style, the admin's). ReDoc runs its search
# in a worker made from a blob. See apps/common/middleware.py.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

ROOT_URLCONF = "simapp.urls"
WSGI_APPLICATION = "simapp.wsgi.application"
ASGI_APPLICATION = "simapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # A banner on pages that need the vector index while the store does not answer.
                "apps.common.context_processors.vector_store_banner",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "db.sqlite3"}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # The web process and its job thread write concurrently: WAL lets readers go on during a write,
        # IMMEDIATE transactions queue writers instead of failing them.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not the in-memory default, because tests start real worker processes that must share it;
    # one per test process, so parallel test runs do not clobber each other.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-db-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "simapp" / "static"]
# Development serves static files straight from the apps; production serves what collectstatic gathered.
WHITENOISE_AUTOREFRESH = DEBUG
WHITENOISE_USE_FINDERS = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Imports (the import page, the import API, import_dataset): files over SIMAPP_MAX_UPLOAD_MB are refused
# before they are parsed, and inputs of more than SIMAPP_MAX_IMPORT_ROWS items and pairs (also through the
# bulk APIs) as soon as the reader gets there; either way with the reason, and nothing is stored.
SIMAPP_MAX_UPLOAD_BYTES = env_int("SIMAPP_MAX_UPLOAD_MB", 100) * 1024 * 1024
SIMAPP_MAX_IMPORT_ROWS = env_int("SIMAPP_MAX_IMPORT_ROWS", 1_000_000)
if SIMAPP_MAX_UPLOAD_BYTES < 1:
    raise ImproperlyConfigured("SIMAPP_MAX_UPLOAD_MB must be at least 1")
if SIMAPP_MAX_IMPORT_ROWS < 1:
    raise ImproperlyConfigured("SIMAPP_MAX_IMPORT_ROWS must be at least 1")
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes anonymous API requests answer 401, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Our JSON parser answers a too-deeply nested body with a 400 instead of a RecursionError (500).
    "DEFAULT_PARSER_CLASSES": [
        "apps.common.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "apps.common.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.common.api.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "simapp API",
    "DESCRIPTION": (
        "Datasets, items and similarity-labelled pairs; imports and exports; retraining; recommendations, "
        "anomaly scores with feedback, and kNN classification over the active model."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI and ReDoc assets come from the sidecar package: nothing is fetched from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Vector store: a Qdrant server when QDRANT_URL is set, else the embedded engine under DATA_DIR.
QDRANT_URL = env_str("QDRANT_URL")
QDRANT_API_KEY = env_str("QDRANT_API_KEY")
SIMAPP_DEVICE = env_str("SIMAPP_DEVICE", "auto")

# Jobs: real Celery workers when a broker is configured, else a background thread of the web process.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"apps.training.tasks.*": {"queue": "gpu"}, "apps.discovery.tasks.*": {"queue": "gpu"}}
# A running job writes a heartbeat every few seconds; one silent for longer than this is failed.
SIMAPP_HEARTBEAT_TIMEOUT_S = env_int("SIMAPP_HEARTBEAT_TIMEOUT_S", 60)
SIMAPP_HEARTBEAT_INTERVAL_S = env_int("SIMAPP_HEARTBEAT_INTERVAL_S", 5)
SIMAPP_TRAIN_TIME_LIMIT_S = env_int("SIMAPP_TRAIN_TIME_LIMIT_S", 2 * 3600)
# Index versions kept per dataset for rollback (the active one is always kept).
SIMAPP_INDEX_KEEP = env_int("SIMAPP_INDEX_KEEP", 3)
# HNSW search breadth (ef) of the vector store; higher finds more of the exact neighbours, slower.
SIMAPP_HNSW_EF = env_int("SIMAPP_HNSW_EF", 512)
if CELERY_BROKER_URL and not QDRANT_URL and not env_bool("SIMAPP_WORKER_OWNS_STORE", False):
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL is set but QDRANT_URL is not: the embedded vector store can be opened by one "
        "process only, so Celery workers need a Qdrant server. Set QDRANT_URL, or unset CELERY_BROKER_URL "
        "to run jobs in the web process."
    )

# Production hardening, active whenever DEBUG is off.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # container healthchecks speak plain HTTP on loopback
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("SIMAPP_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
