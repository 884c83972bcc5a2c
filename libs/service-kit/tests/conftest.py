"""Fixtures shared by the service-kit tests."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from service_kit.logs import ACCESS_LOGGERS, QUIET_LOGGERS, SERVER_LOGGERS

_TOUCHED = ("", *SERVER_LOGGERS, *ACCESS_LOGGERS, *QUIET_LOGGERS)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A buffer for ``configure_logging``; every logger it touches is put back afterwards."""
    saved = {}
    for name in _TOUCHED:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    buffer = io.StringIO()
    try:
        yield buffer
    finally:
        for name, (handlers, level, propagate, disabled) in saved.items():
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


@pytest.fixture
def logging_snapshot() -> Iterator[None]:
    """Put back every existing logger, for tests that run ``logging.config.dictConfig``.

    ``dictConfig`` reaches beyond the loggers it names: it replaces the root handlers,
    re-enables every other existing logger and resets children of the configured ones.
    """
    manager = logging.Logger.manager
    loggers = [logging.getLogger()] + [
        logger for logger in manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [
        (logger, list(logger.handlers), logger.level, logger.propagate, logger.disabled)
        for logger in loggers
    ]
    try:
        yield
    finally:
        for logger, handlers, level, propagate, disabled in saved:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled
