"""Django's SQLite backend, its connections counted (:mod:`service_kit.djangodb`)."""
