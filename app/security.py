"""Request checks and the one error format every endpoint answers with.

Errors are raised as `BffError` and rendered in one place, as JSON
`{"error": ..., "error_description": ...}` for API callers and as a small HTML page for
top-level browser navigations (a failed sign-in lands a person on /bff/callback, not a script).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from html import escape
from typing import Any
from urllib.parse import quote, urlsplit

from flask import Flask, Request, Response, jsonify, request
from redis.exceptions import RedisError
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed, RequestEntityTooLarge

from . import metrics
from .errors import BffError

log = logging.getLogger(__name__)

CSRF_HEADER = "X-CSRF"
# For HTML the BFF renders (error pages) or relays without a policy of its own: no script, no
# framing, nothing loaded. The SPA's pages carry their own policy (spa.py).
STRICT_HTML_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000"  # a year; includeSubDomains is left to the operator's nginx
# Three login cookies each sealing a return URL this long still fit gunicorn's and nginx's 8 KB
# header limits (README, "Sign-in attempts").
MAX_RETURN_URL_LENGTH = 1024
_RETURN_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"<>`')


def normalize_return_url(url: str) -> str | None:
    """The return URL with its dot segments resolved as a browser resolves them (`.`, `..`,
    and their `%2e` spellings), if the result is a path on this site; else None.

    Checking the normalised form matters: `/.//evil.example` looks local, yet resolves to
    `//evil.example`, which a SPA may hand to `location` as another origin."""
    if not url or len(url) > MAX_RETURN_URL_LENGTH or not url.startswith("/"):
        return None
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    path, rest = url[:cut], url[cut:]
    segments: list[str] = []
    parts = path.split("/")[1:]
    for i, segment in enumerate(parts):
        dots = segment.lower().replace("%2e", ".")
        last = i == len(parts) - 1
        if dots == "..":
            if segments:
                segments.pop()
        elif dots != ".":
            segments.append(segment)
            continue
        if last:
            segments.append("")  # `/a/.` and `/a/b/..` end in a slash
    normalized = "/" + "/".join(segments) + rest
    if not is_local_return_url(normalized):
        return None
    # Percent-encoded as a browser would send it (non-ASCII, quotes, angle brackets), so that its
    # length is its size in the sealed sign-in cookie: 1 024 characters are 1 024 bytes.
    encoded = quote(normalized, safe=_RETURN_URL_SAFE)
    return encoded if len(encoded) <= MAX_RETURN_URL_LENGTH else None


def is_local_return_url(url: str) -> bool:
    """True for a path on this site that a browser cannot reinterpret as another origin.

    Rejects `//host`, `/\\host` (browsers treat a backslash as a slash), schemes, and control
    characters or spaces (browsers strip tabs and newlines, turning `/\\t/host` into `//host`).
    Dot segments are the caller's to resolve first (`normalize_return_url`).
    """
    if not url or len(url) > MAX_RETURN_URL_LENGTH or not url.startswith("/"):
        return False
    path = url.split("?", 1)[0].split("#", 1)[0]
    if url.startswith("//") or "\\" in path:  # in a query or fragment a backslash is just a character
        return False
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        return False
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc


def csrf_protected(view: Callable[..., Any]) -> Callable[..., Any]:
    """Require `X-CSRF: 1`: a custom header forces a CORS preflight, which cross-site pages fail."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.headers.get(CSRF_HEADER) != "1":
            raise BffError(403, "missing_csrf_header", "This endpoint requires the header 'X-CSRF: 1'.")
        return view(*args, **kwargs)

    return wrapper


def wants_html() -> bool:
    """A person's browser navigating here, as opposed to fetch() or an API client."""
    if request.headers.get("Sec-Fetch-Mode") == "navigate":
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"]


def error_response(status: int, code: str, description: str) -> Response:
    if wants_html():
        response = Response(_error_page(code, description), status=status, mimetype="text/html")
    else:
        response = jsonify(error=code, error_description=description)
        response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _error_page(code: str, description: str) -> str:
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<title>Sign-in problem</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto'>"
        f"<h1>Something went wrong</h1><p>{escape(description)}</p>"
        f"<p><small>Error code: <code>{escape(code)}</code></small></p>"
        "<p><a href='/'>Back to the application</a></p></body></html>"
    )


DRAIN_LIMIT = 16 * 1024 * 1024


def drain(stream: Any, length: int | None = None) -> None:
    """Read (and drop) a refused body of moderate size (`length` declared, or up to its end),
    so that the client, still sending, can read our 413 instead of a reset connection; beyond
    DRAIN_LIMIT the connection just closes."""
    remaining = DRAIN_LIMIT if length is None else (length if length <= DRAIN_LIMIT else 0)
    while remaining > 0:
        chunk = stream.read(min(remaining, 64 * 1024))
        if not chunk:
            break
        remaining -= len(chunk)


_HTTP_CODES = {
    400: ("bad_request", "The request is malformed."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This endpoint does not accept this HTTP method."),
    413: ("request_too_large", "The request is larger than this server accepts."),
}


def add_security_headers(headers: Headers, mimetype: str | None, https: bool) -> None:
    """On every response (request_cycle.py): no MIME sniffing, no Referer, a strict CSP on HTML
    that has none of its own, HSTS over https."""
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    if mimetype == "text/html" and "Content-Security-Policy" not in headers:
        headers["Content-Security-Policy"] = STRICT_HTML_CSP
    if https:
        headers["Strict-Transport-Security"] = HSTS


def refuse_oversized_body(req: Request) -> None:
    """Werkzeug enforces the size limit only while a view reads the body; refuse a declared
    oversized body up front (request_cycle.py). The proxy raises its own limit before this runs.
    Most requests declare no body: they cost one environ lookup here."""
    if not req.environ.get("CONTENT_LENGTH"):
        return
    limit = req.max_content_length
    if limit is not None and (req.content_length or 0) > limit:
        drain(req.environ["wsgi.input"], req.content_length)
        raise RequestEntityTooLarge()


def init_app(app: Flask) -> None:
    """Route every failure through `error_response`, so no stack trace or token reaches a client."""

    @app.errorhandler(BffError)
    def handle_bff_error(error: BffError) -> Response:
        return error_response(error.status, error.code, error.description)

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException) -> Response:
        # Failures while opening the session (before any view) reach Flask as a 500 wrapping them.
        original = getattr(error, "original_exception", None)
        if isinstance(error, InternalServerError) and original is not None:
            return handle_unexpected(original)
        status = error.code or 500
        code, description = _HTTP_CODES.get(status, ("http_error", "The request could not be served."))
        response = error_response(status, code, description)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        if type(error).__module__.startswith("gunicorn.http"):
            # gunicorn raises its parse errors (a bad chunk size, a body cut short) while a view
            # reads the body: the client's fault, so a 4xx like any other bad input.
            return error_response(400, "bad_request", "The request body is malformed or incomplete.")
        if isinstance(error, RedisError):
            metrics.REDIS_ERRORS.inc()
            log.error("session store unavailable: %s", type(error).__name__)
            return error_response(
                503, "session_store_unavailable", "The session store is unavailable; try again shortly."
            )
        # The type only: exception messages can quote request data.
        log.error("unhandled %s on %s %s", type(error).__name__, request.method, request.path)
        return error_response(500, "server_error", "The server failed to handle this request.")
