"""Keeping secrets out of logs: magic-link tokens travel in request paths (`GET /p/<token>`),
and an access log line would otherwise hand a working link to whoever reads the logs."""

from __future__ import annotations

import logging
import re

_TOKEN_PATH = re.compile(r"/p/(?!renew\b)[^/?#\s\"']+")
MASKED_PATH = "/p/[token]"
ACCESS_LOGGERS = ("uvicorn.access",)


def mask_tokens(text: str) -> str:
    return _TOKEN_PATH.sub(MASKED_PATH, text)


class TokenFilter(logging.Filter):
    """Rewrites a record's message and arguments with every magic-link token masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_tokens(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: mask_tokens(value) if isinstance(value, str) else value
                           for key, value in record.args.items()}
        return True


def install_token_filter(logger_names: tuple[str, ...] = ACCESS_LOGGERS) -> None:
    """Adds the filter to each logger once (the app factory may run more than once per process)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, TokenFilter) for existing in logger.filters):
            logger.addFilter(TokenFilter())
