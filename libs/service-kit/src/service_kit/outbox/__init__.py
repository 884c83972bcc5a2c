"""The transactional outbox: audit events that cannot be lost (docs/architecture.md).

Producers declare the table with :class:`OutboxMixin` and write events with
:func:`outbox_values`; :mod:`service_kit.outbox.command` delivers them.
"""

from service_kit.outbox.schema import OutboxMixin
from service_kit.outbox.writer import Actor, outbox_values

__all__ = ["Actor", "OutboxMixin", "outbox_values"]
