"""``ENGINE: "service_kit.djangodb.sqlite3"``: Django's, its connections counted."""

from __future__ import annotations

from django.db.backends.sqlite3 import base

from service_kit.djangodb import CountedConnections


class DatabaseWrapper(CountedConnections, base.DatabaseWrapper):
    pass
