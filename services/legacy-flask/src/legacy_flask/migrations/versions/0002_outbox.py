"""Add the audit outbox: the table both producers share, defined in the kit."""

from service_kit.outbox.schema import create_outbox as upgrade
from service_kit.outbox.schema import drop_outbox as downgrade

revision = "0002_outbox"
down_revision = "0001_orders"
