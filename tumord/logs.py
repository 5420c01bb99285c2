"""One logging set-up: JSON lines under systemd or when asked, readable console output in a terminal."""
from __future__ import annotations

import logging
import os
import sys

import structlog


def setup_logging(json_lines: bool | None = None, level: str = "info") -> None:
    if json_lines is None:  # systemd sets JOURNAL_STREAM / INVOCATION_ID; a pipe is read by programs
        json_lines = bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM")) or not sys.stderr.isatty()
    renderer = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # the stderr of the moment, not of configure time: a replaced stream (pytest's capture,
        # a redirect) must not leave loggers writing to a closed file
        logger_factory=lambda *args: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "tumord"):
    return structlog.get_logger(name)
