"""Django's PostgreSQL backend, its connections counted (:mod:`service_kit.djangodb`)."""
