"""GET /bff/authz: the session check for nginx's `auth_request`, so that nginx itself can proxy
`/api/<name>/...` to the upstream (README, "Deploying behind nginx").

nginx asks with the browser's own headers (its cookie and `X-CSRF`), the original target in
`X-Original-URI`, and the shared secret in `X-BFF-Authz-Secret`. The answer applies exactly the
`/api` rules: someone signed in, the CSRF header, a configured upstream, the raw path checks, the
token refreshed under the session's lock. On success: 204 with, in headers for nginx to use, the
`Authorization` value, the upstream's path (the one checked here, byte for byte) and the SPA's
own cookies without the BFF's; else the `/api` error statuses with their JSON bodies.

Without the secret configured, or with a wrong one, the endpoint does not exist (404): a browser
can never obtain a token here, only nginx, which adds the secret in an `internal` location.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import Blueprint, Response, request
from werkzeug.exceptions import NotFound

from . import extensions, metrics
from .api_access import api_token, checked_target
from .bff import never_cache
from .errors import BffError
from .proxy import spa_cookies
from .proxy_paths import invalid_path
from .security import csrf_protected
from .upstreams import UPSTREAM_NAME

bp = Blueprint("authz", __name__, url_prefix="/bff")
bp.after_request(never_cache)

SECRET_HEADER = "X-BFF-Authz-Secret"  # noqa: S105 - a header name
TARGET_HEADER = "X-Original-URI"
AUTHORIZATION_HEADER = "X-BFF-Authorization"  # nginx: auth_request_set ... $upstream_http_x_bff_authorization
UPSTREAM_PATH_HEADER = "X-BFF-Upstream-Path"  # nginx: proxy_pass http://<upstream>$bff_upstream_path
UPSTREAM_COOKIE_HEADER = "X-BFF-Upstream-Cookie"  # the SPA's own cookies, the BFF's taken out


def _from_nginx() -> None:
    secret = extensions.settings().authz_secret
    given = request.headers.get(SECRET_HEADER, "")
    if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
        raise NotFound()  # the same answer as any address that does not exist


def api_name(path: str) -> str:
    """`echo` in `/api/echo/...`: the upstream's name, as the proxy's route would read it."""
    if not path.startswith("/api/"):
        raise invalid_path("the path must start with /api/<name>/")
    name, slash, _ = path[len("/api/") :].partition("/")
    if not slash or not UPSTREAM_NAME.fullmatch(name):  # an encoded name (`ca%70`) included
        raise invalid_path("the path must start with /api/<name>/")
    return name


@bp.get("/authz")
def authz() -> Response:
    _from_nginx()  # first: without the secret nothing else is checked, not even the CSRF header
    return _authorize()


@csrf_protected
def _authorize() -> Response:
    target = request.headers.get(TARGET_HEADER, "")
    path, _, query = target.partition("?")
    name = api_name(path)
    outcome = "unknown"
    try:
        upstream, url = checked_target(name, path, f"/api/{name}", query)
        outcome = name
        token = api_token(name, upstream)
    except BffError as error:
        metrics.AUTHZ_DECISIONS.labels(outcome, metrics.status_label(error.status)).inc()
        raise
    metrics.AUTHZ_DECISIONS.labels(name, "204").inc()
    parts = urlsplit(url)
    response = Response(status=204)
    if token is not None:  # none for an upstream whose policy sends none (or none to the anonymous)
        response.headers[AUTHORIZATION_HEADER] = f"Bearer {token}"
    response.headers[UPSTREAM_PATH_HEADER] = parts.path + (f"?{parts.query}" if parts.query else "")
    cookies = spa_cookies()
    if cookies:
        response.headers[UPSTREAM_COOKIE_HEADER] = cookies
    return response
