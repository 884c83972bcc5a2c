"""The orders feature: one blueprint under ``/api/orders``."""

from legacy_flask.orders.views import bp

__all__ = ["bp"]
