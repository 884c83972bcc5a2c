"""JSON-lines logging: one object per line with service, level and request id.

``configure_logging`` replaces the root handlers and adopts the servers' own
loggers (uvicorn, gunicorn) so that everything a process prints is one format.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

from service_kit.context import current_request_id
from service_kit.tracecontext import current_span_id, current_trace_id

#: Attributes every ``LogRecord`` has; anything else was passed with ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

#: Server loggers whose output is re-routed through the JSON handler.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "gunicorn", "gunicorn.error")
#: The servers' own access logs are off: the kit's adapters write one access line per
#: request, with the route template and request id, in the same shape for every framework.
ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access")
#: Extra attributes some libraries attach that carry nothing for a JSON reader.
_DROPPED_EXTRAS = frozenset({"color_message"})

#: Libraries whose INFO lines are noise in a server's log (one per request or probe).
QUIET_LOGGERS = ("httpx", "httpcore", "alembic.runtime.migration")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id:
            entry["request_id"] = request_id
        trace_id = current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
            span_id = current_span_id()
            if span_id:
                entry["span_id"] = span_id
        for key, value in record.__dict__.items():
            if (
                key not in _STANDARD_ATTRS
                and key not in _DROPPED_EXTRAS
                and key not in entry
                and not key.startswith("_")
            ):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = {
                "type": record.exc_info[0].__name__,
                "stack": "".join(traceback.format_exception(*record.exc_info)),
            }
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every log record of this process to ``stream`` as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        for existing in list(server_logger.handlers):
            server_logger.removeHandler(existing)
        server_logger.propagate = True
    for name in ACCESS_LOGGERS:
        logging.getLogger(name).disabled = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def gunicorn_logconfig(service: str, level: str = "INFO") -> dict[str, Any]:
    """``logconfig_dict`` for gunicorn: its master and workers log JSON lines too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "service": service}},
        "handlers": {
            "stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": sys.stdout}
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }
