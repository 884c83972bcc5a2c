"""``ENGINE: "service_kit.djangodb.postgresql"``: Django's, its connections counted."""

from __future__ import annotations

from django.db.backends.postgresql import base

from service_kit.djangodb import CountedConnections


class DatabaseWrapper(CountedConnections, base.DatabaseWrapper):
    pass
