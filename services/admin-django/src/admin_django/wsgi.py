"""WSGI entry point for gunicorn: ``admin_django.wsgi:application``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "admin_django.settings")
application = get_wsgi_application()
