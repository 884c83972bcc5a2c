"""Django settings, all derived from :class:`admin_django.conf.AdminSettings` (``ADMIN_*``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.utils.crypto import get_random_string

from admin_django.conf import AdminSettings
from service_kit.logs import JsonFormatter

CONFIG = AdminSettings()
BASE_DIR = Path(__file__).resolve().parent
DEBUG = False
DEVELOPMENT = CONFIG.is_development

# Development without a configured key gets a fresh one per start (sessions do not survive).
SECRET_KEY = CONFIG.secret_key.get_secret_value() if CONFIG.secret_key else get_random_string(50)
ALLOWED_HOSTS = CONFIG.allowed_hosts
CSRF_TRUSTED_ORIGINS = CONFIG.csrf_trusted_origins

INSTALLED_APPS = [
    # Ours first: the support app's templates extend (and so override) the admin's index.
    "admin_django.audit",
    "admin_django.support",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "service_kit.django.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "admin_django.audit.middleware.AuditMutationsMiddleware",
]

ROOT_URLCONF = "admin_django.urls"
WSGI_APPLICATION = "admin_django.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict[str, object]:
    """``sqlite:///path`` or ``postgresql://user:pass@host:port/db`` as Django's DATABASES entry."""
    parsed = urlsplit(url)
    if parsed.scheme.startswith("sqlite"):
        name = unquote(parsed.path[1:]) if parsed.path.startswith("/") else parsed.path
        name = name or ":memory:"
        if name != ":memory:":
            Path(name).parent.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "service_kit.djangodb.sqlite3",
            "NAME": name,
            "OPTIONS": {
                "timeout": 15,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=15000;",
            },
        }
    if not parsed.scheme.startswith("postgres"):
        raise ValueError("ADMIN_DATABASE_URL must be sqlite:///… or postgresql://…")
    return {
        "ENGINE": "service_kit.djangodb.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": 60,
        # No ping per request: a dropped connection fails its query, and the kit closes it
        # and runs a read once more (service_kit.django, docs/architecture.md).
        "CONN_HEALTH_CHECKS": False,
        # No prepare_threshold: Django's cursors bind on the client (one simple query per
        # statement, one round trip), which psycopg never prepares.
        "OPTIONS": {"connect_timeout": 5},
    }


DATABASES = {"default": _database(CONFIG.database_url)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# The admin's CSS/JS: collected into STATIC_ROOT (`admin-django collectstatic`, run by
# make up and in the image build) and served by WhiteNoise, so no web server is needed.
STATIC_URL = "/admin/static/"
STATIC_ROOT = CONFIG.static_root

# Cookies: Secure outside development (behind TLS) unless ADMIN_SECURE_COOKIES says otherwise
# (a plain-HTTP ingress; the support app warns at start in production), never readable by scripts.
SESSION_COOKIE_SECURE = CONFIG.cookies_secure
CSRF_COOKIE_SECURE = CONFIG.cookies_secure
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 8 * 3600
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = False
DATA_UPLOAD_MAX_MEMORY_SIZE = CONFIG.max_body_bytes
# The console's forms: Django counts fields and files; the kit's middleware answers a breach
# with the console's 400 page and counts it (service_kit.django).
DATA_UPLOAD_MAX_NUMBER_FIELDS = CONFIG.form_max_fields
DATA_UPLOAD_MAX_NUMBER_FILES = CONFIG.form_max_files
# Every other structural limit of a request (service_kit.limits; README.md, "Security").
POLYFRAME_INPUT_LIMITS = CONFIG.input_limits

LOGIN_URL = "/admin/login/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter, "service": CONFIG.service_name}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"level": CONFIG.log_level, "handlers": ["stdout"]},
    "loggers": {
        # The kit's middleware logs one access line per request and every error.
        "django.request": {"level": "CRITICAL", "propagate": True},
        "django.server": {"level": "WARNING", "propagate": True},
    },
}
POLYFRAME_SERVICE_NAME = CONFIG.service_name
