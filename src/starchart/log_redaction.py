"""API keys never reach a log line: a filter on the server's log handlers.

At debug level the WebSocket library logs every handshake header, a browser's
key in ``Sec-WebSocket-Protocol: bearer.KEY`` included; anything else that
logs a header, a URL or an exception message could carry one too. The filter
rewrites each record's message with every key (``sk-star-...``, or what follows
``Bearer`` / ``bearer.``) replaced before any handler writes it.
"""

from __future__ import annotations

import logging
import re

from starchart.store.keys import KEY_PREFIX

REDACTED = "[redacted]"
_KEYS = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_\-]+|(?<=bearer[ .])[^\s,;\"']+",
                   re.IGNORECASE)
# The loggers whose handlers print the server's log (uvicorn's, and the root's).
_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "starchart")


def redact(text: str) -> str:
    return _KEYS.sub(REDACTED, text)


class KeyRedaction(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # A traceback's text (exception messages) is redacted as well.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install() -> None:
    """Put the filter on every handler that prints the server's log (after uvicorn
    configured logging)."""
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, KeyRedaction) for f in handler.filters):
                handler.addFilter(KeyRedaction())
