"""The bare framework apps the services are held against.

Each answers ``GET /hello`` with a small JSON document and ``GET /readyz`` with
200, nothing else: no database, no authentication, no middleware of ours. They
run on the same servers and settings as the services (see
:mod:`polyframe_bench.servers`), so the difference is what the service adds.
"""

import os
from typing import Any

HELLO = {"message": "hello", "framework": "bare"}


def django_settings(urlconf: str) -> dict[str, Any]:
    """Django's settings of a bare app (and a floor's, which adds its database): a JSON API's
    defaults, no database, sessions or templates; the common and security middleware stay,
    as a real project keeps them."""
    return {
        "DEBUG": False,
        "SECRET_KEY": os.environ.get("BARE_DJANGO_SECRET_KEY", "bare-benchmark-app-not-a-secret"),
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost"],
        "ROOT_URLCONF": urlconf,
        "INSTALLED_APPS": [],
        "MIDDLEWARE": [
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.common.CommonMiddleware",
        ],
        "USE_TZ": True,
    }
