"""Logging setup for every process: human lines by default, one JSON object per line with ``--log-json``,
and a redaction filter so secrets (URL passwords, API keys) never reach a log line.

``setup_logging(verbosity, json)`` is the one call a command makes; :func:`redact` is also what any code
printing a URL or an error message to an operator should pass it through.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Optional, TextIO

#: ``scheme://user:password@host`` -> ``scheme://user:***@host`` (the user name is not a secret)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^:/@\s]*):(?P<secret>[^@\s/]+)@", re.IGNORECASE)
_SECRET_NAMES = r"api[_-]?key|secret|password|passphrase|passwd|token|private[_-]?key"
#: a mapping key whose value is a secret (``apiKey``, ``password``, ``access_token``, ...)
_SECRET_KEY = re.compile(rf"\w*?(?:{_SECRET_NAMES})", re.IGNORECASE)
#: ``apiKey: x``, ``"secret": "x"``, ``password=x``, ``'token': 'x'`` ... -> the value masked
_KEY_VALUE = re.compile(
    rf"(?P<head>[\"']?\b\w*?(?:{_SECRET_NAMES})[\"']?\s*[:=]\s*)"
    r"(?:(?P<quote>[\"'])(?:\\.|(?!(?P=quote)).)*(?P=quote)|[^\"'\s,;&}\])]+)",
    re.IGNORECASE,
)
MASK = "***"

#: attributes every LogRecord has; anything else on a record came from ``extra=...``
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """Mask passwords in URLs and the values of secret-looking keys in ``text``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['head']}{m['quote'] or ''}{MASK}{m['quote'] or ''}", text)


def redact_value(value: Any) -> Any:
    """:func:`redact` applied through dicts, lists and tuples; values under secret-named keys are masked."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            key: MASK if isinstance(key, str) and _SECRET_KEY.fullmatch(key) else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(item) for item in value)
    return value


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with ``log.info(..., extra={...})``."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRS}


class RedactingFilter(logging.Filter):
    """Renders each record's message (and traceback) once, redacted, so no handler can leak a secret."""

    _tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tracebacks.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in extra_fields(record).items():
            setattr(record, key, redact_value(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC ISO 8601), level, logger, msg, extra fields, exc (traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        doc: dict[str, Any] = {"ts": ts, "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        doc.update(extra_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, default=str, ensure_ascii=False)


HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def level_for(verbosity: int) -> int:
    """``-v`` count -> level: 0 warnings, 1 info, 2+ debug."""
    return (logging.WARNING, logging.INFO, logging.DEBUG)[max(0, min(verbosity, 2))]


def setup_logging(verbosity: int = 0, json: bool = False, stream: Optional[TextIO] = None) -> logging.Handler:
    """Configure the root logger (replacing its handlers): level from ``verbosity``, human or JSON lines on
    ``stream`` (default stderr), every record redacted. Returns the installed handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(HUMAN_FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_for(verbosity))
    return handler
