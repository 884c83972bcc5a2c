"""Remember the span that wrote each audit event, so its delivery joins the same trace."""

from service_kit.outbox.schema import add_span_id as upgrade
from service_kit.outbox.schema import drop_span_id as downgrade

revision = "0003_outbox_span"
down_revision = "0002_outbox"
