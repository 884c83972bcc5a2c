"""Loggers put back as they were, for tests of code that configures logging (a handler of
its own, or ``logging.config.dictConfig``, which rearranges every existing logger)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


@contextmanager
def loggers_restored(names: Iterable[str] | None = None) -> Iterator[None]:
    """Put back the loggers ``names`` ("" is the root), by default the root and every existing
    one: handlers (closing those added meanwhile), level, propagation, disabled."""
    if names is None:
        manager = logging.Logger.manager
        loggers = [logging.getLogger()] + [
            logger for logger in manager.loggerDict.values() if isinstance(logger, logging.Logger)
        ]
    else:
        loggers = [logging.getLogger(name) for name in names]
    saved = [
        (logger, list(logger.handlers), logger.level, logger.propagate, logger.disabled)
        for logger in loggers
    ]
    kept = {handler for _, handlers, *_ in saved for handler in handlers}
    try:
        yield
    finally:
        for logger, handlers, level, propagate, disabled in saved:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                if handler not in kept:
                    handler.close()
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled
