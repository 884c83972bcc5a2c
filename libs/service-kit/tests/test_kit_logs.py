"""JSON-lines logging: shape, request id, extras, exceptions, server loggers."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime
from typing import Any

from service_kit.context import request_id_var
from service_kit.logs import configure_logging


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    text = buffer.getvalue()
    assert text.endswith("\n") or text == ""
    return [json.loads(line) for line in text.splitlines()]


def test_one_json_object_per_line(stream: io.StringIO) -> None:
    configure_logging("demo", stream=stream)
    log = logging.getLogger("demo.things")
    log.info("first %s", "message")
    log.warning("second\nwith a newline")
    entries = lines(stream)
    assert len(entries) == 2
    first, second = entries
    assert set(first) == {"ts", "level", "service", "logger", "message"}
    assert first["level"] == "info"
    assert first["service"] == "demo"
    assert first["logger"] == "demo.things"
    assert first["message"] == "first message"
    assert second["level"] == "warning"
    assert second["message"] == "second\nwith a newline"
    stamp = datetime.fromisoformat(first["ts"])
    assert stamp.utcoffset() is not None
    assert stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_level_filters(stream: io.StringIO) -> None:
    configure_logging("demo", level="WARNING", stream=stream)
    logging.getLogger("demo").info("hidden")
    logging.getLogger("demo").error("shown")
    assert [entry["message"] for entry in lines(stream)] == ["shown"]


def test_replaces_existing_root_handlers(stream: io.StringIO) -> None:
    other = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(other))
    configure_logging("demo", stream=stream)
    logging.getLogger("demo").warning("only once")
    assert other.getvalue() == ""
    assert len(lines(stream)) == 1
    assert len(logging.getLogger().handlers) == 1


def test_request_id_from_context(stream: io.StringIO) -> None:
    configure_logging("demo", stream=stream)
    log = logging.getLogger("demo")
    log.info("outside")
    token = request_id_var.set("req-123")
    try:
        log.info("inside")
    finally:
        request_id_var.reset(token)
    outside, inside = lines(stream)
    assert "request_id" not in outside
    assert inside["request_id"] == "req-123"


def test_explicit_request_id_wins_over_context(stream: io.StringIO) -> None:
    configure_logging("demo", stream=stream)
    token = request_id_var.set("from-context")
    try:
        logging.getLogger("demo").info("x", extra={"request_id": "from-extra"})
    finally:
        request_id_var.reset(token)
    (entry,) = lines(stream)
    assert entry["request_id"] == "from-extra"


def test_extra_fields_are_top_level(stream: io.StringIO) -> None:
    configure_logging("demo", stream=stream)
    logging.getLogger("demo").info(
        "call",
        extra={"peer": "orders", "attempt": 2, "when": datetime(2024, 1, 2), "_private": 1},
    )
    (entry,) = lines(stream)
    assert entry["peer"] == "orders"
    assert entry["attempt"] == 2
    assert entry["when"] == "2024-01-02 00:00:00"  # not JSON-native: rendered with str()
    assert "_private" not in entry
    # Standard LogRecord attributes are not copied.
    for standard in ("args", "msg", "pathname", "lineno", "levelno", "thread", "taskName"):
        assert standard not in entry


def test_extra_cannot_overwrite_core_fields(stream: io.StringIO) -> None:
    configure_logging("demo", stream=stream)
    logging.getLogger("demo").info("real", extra={"service": "spoofed", "level": "critical"})
    (entry,) = lines(stream)
    assert entry["service"] == "demo"
    assert entry["level"] == "info"


def test_exception_info(stream: io.StringIO) -> None:
    configure_logging("demo", stream=stream)
    try:
        raise KeyError("missing-thing")
    except KeyError:
        logging.getLogger("demo").exception("failed")
    (entry,) = lines(stream)
    assert entry["level"] == "error"
    assert entry["message"] == "failed"
    assert entry["error"]["type"] == "KeyError"
    assert "Traceback" in entry["error"]["stack"]
    assert "missing-thing" in entry["error"]["stack"]
    assert "test_exception_info" in entry["error"]["stack"]


def test_no_error_key_without_exception(stream: io.StringIO) -> None:
    configure_logging("demo", stream=stream)
    logging.getLogger("demo").error("plain", exc_info=False)
    (entry,) = lines(stream)
    assert "error" not in entry


def test_non_ascii_kept(stream: io.StringIO) -> None:
    configure_logging("demo", stream=stream)
    logging.getLogger("demo").info("café ✓")
    assert "café ✓" in stream.getvalue()
    assert lines(stream)[0]["message"] == "café ✓"


def test_uvicorn_access_disabled(stream: io.StringIO) -> None:
    configure_logging("demo", stream=stream)
    assert logging.getLogger("uvicorn.access").disabled
    assert logging.getLogger("gunicorn.access").disabled
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')
    assert lines(stream) == []


def test_server_loggers_routed_through_json(stream: io.StringIO) -> None:
    own = io.StringIO()
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.StreamHandler(own))
    uvicorn_error.propagate = False
    configure_logging("demo", stream=stream)
    assert uvicorn_error.handlers == []
    assert uvicorn_error.propagate
    uvicorn_error.info("Started server process", extra={"color_message": "\x1b[32mStarted\x1b[0m"})
    assert own.getvalue() == ""
    (entry,) = lines(stream)
    assert entry["logger"] == "uvicorn.error"
    assert entry["message"] == "Started server process"
    assert "color_message" not in entry


def test_quiet_loggers_raised_to_warning(stream: io.StringIO) -> None:
    configure_logging("demo", level="DEBUG", stream=stream)
    logging.getLogger("httpx").info("HTTP Request: GET http://x 200")
    logging.getLogger("httpx").warning("kept")
    assert [entry["message"] for entry in lines(stream)] == ["kept"]
    assert logging.getLogger("demo").isEnabledFor(logging.DEBUG)


def test_quiet_loggers_follow_a_stricter_root(stream: io.StringIO) -> None:
    configure_logging("demo", level="ERROR", stream=stream)
    assert logging.getLogger("httpx").level == logging.ERROR
