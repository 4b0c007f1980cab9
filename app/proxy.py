"""/api/<name>/<path>: a reverse proxy to allow-listed upstreams that carries the session's token.

Bodies stream both ways (nothing is buffered whole). The browser's BFF cookies, its `X-CSRF`
and `Authorization` headers and hop-by-hop headers never reach the upstream; the upstream's
`Set-Cookie` never reaches the browser (it could overwrite the session cookie).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

import urllib3
from flask import Blueprint, Response, request, session

from . import extensions, metrics
from .errors import BffError
from .security import csrf_protected
from .sessions import SessionRef
from .tokens import access_token_for

log = logging.getLogger(__name__)
bp = Blueprint("proxy", __name__, url_prefix="/api")

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade"}
)  # fmt: skip
NOT_FORWARDED = HOP_BY_HOP | {"host", "cookie", "authorization", "x-csrf", "content-length"}
NOT_RETURNED = HOP_BY_HOP | {"set-cookie"}
CHUNK = 64 * 1024
CONNECT_TIMEOUT = 5.0

# One connection pool per worker, kept alive to the upstreams. urllib3 rather than requests: no
# per-request environment lookups, and the bytes stream through untouched.
_pool = urllib3.PoolManager(num_pools=32, maxsize=32, block=False)


class _SizedStream:
    """The request body as a file with a known length: streamed upstream with Content-Length."""

    def __init__(self, stream: Any, length: int) -> None:
        self._stream = stream
        self._length = length

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


@bp.url_value_preprocessor
def allow_api_sized_bodies(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Runs before every before_request hook, so the app-wide size check sees the API's limit."""
    request.max_content_length = extensions.settings().api_max_body


@bp.after_request
def count(response: Response) -> Response:
    name = (request.view_args or {}).get("name")
    known = name in extensions.settings().api_upstreams
    metrics.PROXY_REQUESTS.labels(name if known else "unknown", str(response.status_code)).inc()
    return response


@bp.route("/<name>/", defaults={"path": ""}, methods=METHODS)
@bp.route("/<name>/<path:path>", methods=METHODS)
@csrf_protected
def forward(name: str, path: str) -> Response:
    """Forward to upstream `name` with `Authorization: Bearer <access token>`."""
    settings = extensions.settings()
    base = settings.api_upstreams.get(name)
    if base is None:
        raise BffError(404, "unknown_upstream", f"No API is configured under /api/{name}.")
    ref = SessionRef.from_session_id(session.sid)
    if not session.get("sub") or ref is None:
        raise BffError(401, "unauthenticated", "No one is signed in.")
    token = access_token_for(
        extensions.store(),
        extensions.provider(),
        ref,
        dict(session),
        skew=settings.refresh_skew,
    )
    upstream = _send(f"{base}/{path}", token, name, settings)
    headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in NOT_RETURNED]
    return Response(_relay(upstream), status=upstream.status, headers=headers, direct_passthrough=True)


def _send(url: str, token: str, name: str, settings: Any) -> urllib3.BaseHTTPResponse:
    length = request.content_length
    chunked = not length and _is_chunked()
    body = _SizedStream(request.stream, length) if length else (_chunks(request.stream) if chunked else None)
    query = request.query_string.decode("latin-1")
    call = functools.partial(
        _pool.request,
        request.method,
        f"{url}?{query}" if query else url,
        body=body,
        headers=_forwarded_headers(token, name, settings),
        chunked=chunked,
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
            # A kept-alive connection the upstream closed just as we reused it. Without a body,
            # nothing is lost by asking once more on a new one; with one, the body is spent.
            if body is not None:
                raise
            return call()
    except (urllib3.exceptions.HTTPError, OSError) as error:
        reason = getattr(error, "reason", None) or error  # MaxRetryError wraps the cause
        # A refused connection is a NewConnectionError, which urllib3 derives from its timeouts.
        timed_out = isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
            reason, urllib3.exceptions.NewConnectionError
        )
        if timed_out:
            raise BffError(504, "upstream_timeout", f"The API '{name}' did not answer in time.") from None
        raise BffError(502, "upstream_unavailable", f"The API '{name}' could not be reached.") from None


def _chunks(stream: Any) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _is_chunked() -> bool:
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _forwarded_headers(token: str, name: str, settings: Any) -> dict[str, str]:
    listed = {h.strip().lower() for h in request.headers.get("Connection", "").split(",")}
    headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED | listed}
    cookies = _foreign_cookies(settings.cookie_name)
    if cookies:
        headers["Cookie"] = cookies
    if request.content_length:
        headers["Content-Length"] = str(request.content_length)
    public = settings.public_url.split("://", 1)
    headers.update(
        {
            "Authorization": f"Bearer {token}",
            "X-Forwarded-For": request.remote_addr or "",
            "X-Forwarded-Proto": public[0],
            "X-Forwarded-Host": public[1],
            "X-Forwarded-Prefix": f"/api/{name}",
        }
    )
    return headers


def _foreign_cookies(session_cookie: str) -> str:
    """The browser's other cookies for this site, without the BFF's session and login cookies."""
    return "; ".join(
        f"{k}={v}"
        for k, v in request.cookies.items(multi=True)
        if k != session_cookie and not k.startswith(session_cookie + "-login-")
    )


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
