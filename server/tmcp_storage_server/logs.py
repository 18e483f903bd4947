"""Log records as one JSON object per line (``STORAGE_LOG_FORMAT=json``) or as text.

A JSON line holds ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``msg``
and ``pid``; while a call is handled also its ``request_id`` (from the ``REQUEST_ID``
context variable, which the api layer sets for each call, so every record emitted on the
call's behalf carries it, in tasks the handler starts too); the per-call access record
adds ``method``, ``code`` and ``duration_ms``; a record with an exception adds ``exc``.

The text format is the one the server always printed, plus `` request_id=...`` in a call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from itertools import count

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the call being handled (None outside calls)."""

REQUEST_ID_HEADER = "x-request-id"
"""The metadata key that carries a request id both ways."""

MAX_REQUEST_ID = 128
_VALID_ID = re.compile(rf"[A-Za-z0-9+/=._:-]{{1,{MAX_REQUEST_ID}}}\Z")
_FIELDS = ("method", "code", "duration_ms")
"""Record attributes (``extra=``) a JSON line carries when present."""
TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
FORMATS = ("json", "text")


class RequestIds:
    """Generates request ids: a random per-process prefix and a counter, so an id costs
    one increment and one format, and ids of different processes never collide."""

    def __init__(self) -> None:
        self._prefix = os.urandom(5).hex() + "-"
        self._next = count(1)

    def new(self) -> str:
        """A fresh id."""
        return f"{self._prefix}{next(self._next):x}"

    def accept(self, sent: str | bytes | None) -> str:
        """The client's id if it is acceptable (1-128 characters of letters, digits and
        ``+/=._:-``), else a fresh one: a malformed tracing header never fails a call."""
        if isinstance(sent, str) and _VALID_ID.match(sent):
            return sent
        return self.new()


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON."""
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        for name in _FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The plain format, with the request id appended inside a call."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The record as text."""
        text = super().format(record)
        request_id = REQUEST_ID.get()
        return text if request_id is None else f"{text} request_id={request_id}"


def configure(*, level: str, fmt: str) -> None:
    """Send every record at ``level`` and above to stderr in format ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # grpc and asyncio log a line per call at DEBUG: keep them out of our access log.
    for chatty in ("grpc", "asyncio"):
        logging.getLogger(chatty).setLevel(max(logging.INFO, root.level))
