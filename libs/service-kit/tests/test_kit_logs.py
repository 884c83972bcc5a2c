"""JSON-lines logging: shape, request id, extras, exceptions, server loggers."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys
from datetime import datetime
from typing import Any

import pytest

from service_kit.context import request_id_var
from service_kit.logs import JsonFormatter, configure_logging, gunicorn_logconfig


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


# --- gunicorn's logconfig_dict --------------------------------------------------------


@pytest.mark.usefixtures("logging_snapshot")
def test_gunicorn_logconfig_error_lines_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    config = gunicorn_logconfig("legacy-flask", "INFO")
    assert config["handlers"]["stdout"]["stream"] is sys.stdout  # here: pytest's capture
    logging.config.dictConfig(config)
    error_log = logging.getLogger("gunicorn.error")
    error_log.info("Booting worker with pid: %s", 42)
    error_log.debug("hidden at INFO")
    error_log.error("Worker timeout", extra={"pid": 42})
    logging.getLogger("service_kit.access").info("request", extra={"status": 200})
    out, err = capsys.readouterr()
    assert err == ""
    entries = [json.loads(line) for line in out.splitlines()]
    assert [(e["logger"], e["level"], e["message"]) for e in entries] == [
        ("gunicorn.error", "info", "Booting worker with pid: 42"),
        ("gunicorn.error", "error", "Worker timeout"),
        ("service_kit.access", "info", "request"),
    ]
    assert {entry["service"] for entry in entries} == {"legacy-flask"}
    assert entries[1]["pid"] == 42
    assert entries[2]["status"] == 200


@pytest.mark.usefixtures("logging_snapshot")
def test_gunicorn_logconfig_silences_access(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(gunicorn_logconfig("legacy-flask"))
    access_log = logging.getLogger("gunicorn.access")
    access_log.info('127.0.0.1 - - "GET /api/orders HTTP/1.1" 200 12')
    access_log.error("even errors")
    assert capsys.readouterr() == ("", "")
    assert not access_log.isEnabledFor(logging.ERROR)
    assert not access_log.propagate
    assert access_log.handlers == []


@pytest.mark.usefixtures("logging_snapshot")
def test_gunicorn_logconfig_level(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(gunicorn_logconfig("legacy-flask", "DEBUG"))
    logging.getLogger("gunicorn.error").debug("arbiter detail")
    logging.getLogger("legacy_flask").debug("app detail")
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["logger"], e["level"]) for e in entries] == [
        ("gunicorn.error", "debug"),
        ("legacy_flask", "debug"),
    ]


@pytest.mark.usefixtures("logging_snapshot")
def test_gunicorn_logconfig_replaces_root_handlers(capsys: pytest.CaptureFixture[str]) -> None:
    other = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(other))
    logging.config.dictConfig(gunicorn_logconfig("legacy-flask"))
    root_handlers = logging.getLogger().handlers
    assert len(root_handlers) == 1
    assert isinstance(root_handlers[0].formatter, JsonFormatter)
    logging.getLogger("x").warning("once")
    assert other.getvalue() == ""
    assert json.loads(capsys.readouterr().out)["message"] == "once"


@pytest.mark.usefixtures("logging_snapshot")
def test_gunicorn_logger_applies_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    """Through gunicorn's own Logger, which first adds plain handlers of its own."""
    glogging = pytest.importorskip("gunicorn.glogging")
    gconfig = pytest.importorskip("gunicorn.config")
    cfg = gconfig.Config()
    cfg.set("logconfig_dict", gunicorn_logconfig("legacy-flask"))
    cfg.set("accesslog", "-")
    logger = glogging.Logger(cfg)
    logger.info("Listening at: http://127.0.0.1:8000")
    logging.getLogger("gunicorn.access").info('"GET / HTTP/1.1" 200')
    out, err = capsys.readouterr()
    assert err == ""
    (entry,) = [json.loads(line) for line in out.splitlines()]
    assert entry["service"] == "legacy-flask"
    assert entry["logger"] == "gunicorn.error"
    assert entry["message"] == "Listening at: http://127.0.0.1:8000"
