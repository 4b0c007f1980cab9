"""/api/<name>/<path>: a reverse proxy to allow-listed upstreams that carries the session's token.

What may pass each way is decided by `proxy_paths` (raw-path checks) and `proxy_headers`
(allow-lists both ways); this module moves the bytes. Response bodies stream; request bodies stream when their length is
declared and are buffered up to the limit when chunked, so that a refused body (413) never
reaches the upstream, not even in part.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import urllib3
from flask import Blueprint, Response, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from . import extensions, metrics
from .api_access import api_token, checked_target
from .errors import BffError
from .logs import current_request_id
from .proxy_headers import foreign_cookies, forwarded_request_headers, mapped_location, relayed_response_headers
from .proxy_paths import raw_path
from .security import csrf_protected, drain

log = logging.getLogger(__name__)
bp = Blueprint("proxy", __name__, url_prefix="/api")

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
SAFE_TO_RETRY = frozenset({"GET", "HEAD", "OPTIONS"})  # asking twice changes nothing upstream
CHUNK = 64 * 1024
SPOOL_IN_MEMORY = 1024 * 1024  # a buffered chunked body beyond this goes to a temporary file
CONNECT_TIMEOUT = 5.0

# One connection pool per worker, kept alive to the upstreams. urllib3 rather than requests: no
# per-request environment lookups, and the bytes stream through untouched.
_pool = urllib3.PoolManager(num_pools=32, maxsize=32, block=False)


class AnyTail(BaseConverter):
    """Whatever follows `/api/<name>/`, empty or starting with a slash included, so that every
    such path reaches the path rules and gets their answer (400 `invalid_path`), not a 404."""

    regex = ".*"
    part_isolating = False


bp.record_once(lambda state: state.app.url_map.converters.update(tail=AnyTail))


class _SizedStream:
    """A declared-length request body, streamed upstream with its Content-Length. A client that
    stops short aborts the upstream request rather than leaving it waiting for the rest."""

    def __init__(self, stream: Any, length: int) -> None:
        self._stream = stream
        self._remaining = length
        self._length = length

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        size = self._remaining if size < 0 else min(size, self._remaining)
        data = self._stream.read(size)
        if not data:
            raise ClientDisconnected()
        self._remaining -= len(data)
        return data


@bp.url_value_preprocessor
def allow_api_sized_bodies(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Runs before every before_request hook, so the app-wide size check sees the API's limit."""
    request.max_content_length = extensions.settings().api_max_body


@bp.after_request
def count(response: Response) -> Response:
    name = (request.view_args or {}).get("name")
    known = name in extensions.settings().api_upstreams
    metrics.PROXY_REQUESTS.labels(name if known else "unknown", metrics.status_label(response.status_code)).inc()
    return response


@bp.route("/<name>/<tail:path>", methods=METHODS)
@csrf_protected
def forward(name: str, path: str) -> Response:
    """Forward to upstream `name` with `Authorization: Bearer <access token>` (the token its
    policy chooses, if any: api_access.py)."""
    settings = extensions.settings()
    prefix = f"{request.script_root}/api/{name}"
    upstream, url = checked_target(name, raw_path(request.environ), prefix, request.query_string.decode("latin-1"))
    body = _request_body(settings.api_max_body)
    token = api_token(name, upstream)
    answer = _send(url, body, _upstream_headers(token, name, upstream.forward_headers, body), name, settings)
    headers = relayed_response_headers(answer.headers.items(), upstream.return_headers, answer.status)
    location = answer.headers.get("Location")
    if location and (mapped := mapped_location(location, url, upstream.url, prefix)):
        headers.append(("Location", mapped))
    response = Response(_relay(answer), status=answer.status, headers=headers, direct_passthrough=True)
    if "Content-Type" not in answer.headers:
        del response.headers["Content-Type"]  # not Flask's text/html default: the browser must not guess
    return response


def spa_cookies() -> str:
    """The request's Cookie header without the BFF's own cookies: what an upstream may see."""
    settings = extensions.settings()
    return foreign_cookies(
        request.environ.get("HTTP_COOKIE", ""), (settings.cookie_name, settings.attempt_cookie_prefix)
    )


def _request_body(limit: int) -> Any:
    """None, a declared-length stream, or a chunked body read whole (up to `limit`) first."""
    stream = request.environ["wsgi.input"]
    length = request.content_length
    if length:
        return _SizedStream(stream, length)  # over the limit was refused before any view ran
    if "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return None
    buffered: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - freed with the request
    size = 0
    while chunk := stream.read(CHUNK):
        size += len(chunk)
        if size > limit:
            buffered.close()
            drain(stream)
            raise RequestEntityTooLarge()
        buffered.write(chunk)
    buffered.seek(0)
    return _SizedStream(buffered, size) if size else None


def _send(url: str, body: Any, headers: dict[str, str], name: str, settings: Any) -> urllib3.BaseHTTPResponse:
    call = functools.partial(
        _pool.request,
        request.method,
        url,
        body=body,
        headers=headers,
        preload_content=False,
        decode_content=False,
        redirect=False,
        retries=False,
        timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT, settings.api_timeout), read=settings.api_timeout),
    )
    try:
        try:
            return call()
        except urllib3.exceptions.ProtocolError:
            # A kept-alive connection the upstream closed just as we reused it. A safe request
            # without a body is asked once more on a new one; anything else may have been acted
            # on already (a POST that charged a card before the connection dropped), or its body
            # is spent.
            if body is not None or request.method not in SAFE_TO_RETRY:
                raise
            return call()
    except ClientDisconnected:
        raise
    except (urllib3.exceptions.HTTPError, OSError) as error:
        reason = getattr(error, "reason", None) or error  # MaxRetryError wraps the cause
        # A refused connection is a NewConnectionError, which urllib3 derives from its timeouts.
        timed_out = isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
            reason, urllib3.exceptions.NewConnectionError
        )
        if timed_out:
            raise BffError(504, "upstream_timeout", f"The API '{name}' did not answer in time.") from None
        raise BffError(502, "upstream_unavailable", f"The API '{name}' could not be reached.") from None


def _upstream_headers(token: str | None, name: str, extra: frozenset[str], body: Any) -> dict[str, str]:
    settings = extensions.settings()
    headers = forwarded_request_headers(request.headers.items(), extra)
    cookies = spa_cookies()
    if cookies:
        headers["Cookie"] = cookies
    if body is not None:
        headers["Content-Length"] = str(len(body))
    scheme, _, host = settings.public_url.partition("://")
    headers.update(
        {
            "X-Request-Id": current_request_id(),
            "X-Forwarded-For": request.remote_addr or "",
            "X-Forwarded-Proto": scheme,
            "X-Forwarded-Host": host,
            "X-Forwarded-Prefix": f"/api/{name}",
        }
    )
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _relay(upstream: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The upstream's bytes as they come, still encoded (Content-Encoding and -Length hold).
    A complete read returns the connection to the pool; an interrupted one is dropped."""
    complete = False
    try:
        yield from upstream.stream(CHUNK, decode_content=False)
        complete = True
    except (urllib3.exceptions.HTTPError, OSError) as error:
        log.warning("upstream response interrupted: %s", type(error).__name__)  # status already sent
    finally:
        if complete:
            upstream.release_conn()
        else:
            upstream.close()
