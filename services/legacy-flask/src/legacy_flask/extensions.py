"""Extension instances, bound to an app by ``init_app`` in the factory."""

from __future__ import annotations

from legacy_flask.db import Database
from legacy_flask.users import UsersGateway

db = Database()
users = UsersGateway()
