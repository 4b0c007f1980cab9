"""One JSON object per log line, and one access line per request, tied together by a request id.

The request id comes from `X-Request-ID` when it looks like one (so a trace crosses the ingress,
the BFF and the upstream), is generated otherwise, and is echoed back. Log lines carry the
session's handle and `sub`, never its cookie, a token or the client secret; failures are logged
by exception type, since messages can quote request data.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime

import msgspec
from flask import has_request_context, request

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_KEY = "bff.request_id"  # in the WSGI environ, set by request_cycle.StampRequests
# A query string in gunicorn's lines (`Invalid HTTP request line: 'GET /bff/callback?code=…'`):
# from `?` to the next whitespace, keeping a closing quote. Not up to the first quote: a quote in
# the query would make repr() quote the line with `"`, and the rest of the query would show.
QUERY = re.compile(r"""\?\S+?(?=['"]?(?:\s|$))""")
CONTEXT_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "session", "sub")

access_log = logging.getLogger("bff.access")
_ENCODER = msgspec.json.Encoder(enc_hook=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name.startswith("gunicorn."):  # the app's own lines never carry a query
            message = QUERY.sub("?[redacted]", message)
        context = {k: getattr(record, k, None) for k in CONTEXT_FIELDS}
        if has_request_context():
            context["request_id"] = current_request_id()
        if record.exc_info and record.exc_info[0] is not None:
            context["error"] = record.exc_info[0].__name__
        return json_line(record.created, record.levelname, record.name, message, context).decode()


def json_line(created: float, level: str, logger: str, message: str, context: dict[str, object]) -> bytes:
    """One log line, the same shape whoever writes it: the formatter, or the access line's
    shortcut below. Context fields without a value are left out. One pre-built msgspec encoder
    (a tenth of `json.dumps`' cost); values it does not know are written as their `str()`."""
    entry: dict[str, object] = {
        "timestamp": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": logger,
        "message": message,
    }
    entry.update((k, v) for k, v in context.items() if v is not None)
    try:
        return _ENCODER.encode(entry)
    except UnicodeEncodeError:  # a lone surrogate (from an IdP's JSON, say): json escapes it
        return json.dumps(entry, default=str).encode()


def current_request_id() -> str:
    """This request's id (empty outside a request, or before it was stamped)."""
    return request.environ.get(REQUEST_ID_KEY, "") if has_request_context() else ""


def configure(level: str = "INFO") -> None:
    """JSON lines on stderr for the whole process (gunicorn's own lines use the same formatter)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def write_access_line(*, request_id: str, method: str, path: str, status: int, **context: object) -> None:
    """The request's access line (request_cycle.py writes one per request), exactly as
    JsonFormatter would write it, but formatted once and written in one call: a LogRecord, the
    handler chain and the formatter cost ~100 µs a request. Where stderr is no file (a test
    client, a captured stream) it goes through logging instead."""
    message = f"{method} {path} {status}"
    context = {"request_id": request_id, "method": method, "path": path, "status": status, **context}
    line = json_line(time.time(), "INFO", access_log.name, message, context)
    try:
        os.write(_stderr_fd(), line + b"\n")  # one write: whole lines even from many threads
    except (OSError, ValueError):
        access_log.info(message, extra=context)


def _stderr_fd() -> int:
    return sys.stderr.fileno()
