"""What every request pays, app-wide, in one before hook and one after hook.

It used to be five hooks in three modules (request id, body size, security headers, access line,
latency metric). Each hook is one more dispatch through Flask's `ensure_sync`, and each reached
`request`, `g` and `session` through their context-local proxies again, about 25 proxy lookups a
request. Here each proxy is resolved once and the parts are plain functions of what they need,
in the order the contract wants: the request id first (every log line of the request carries
it), the response's headers before the access line and the metric, which time the whole of it.
Blueprint hooks (`Cache-Control: no-store` on /bff, the proxy's counter) still run before these.

The request's id and start time are stamped into its WSGI environ before Flask opens anything:
a request whose session cannot be opened (Redis down) still echoes its id, and its error and
access lines carry it. The after hook reads the session the interface opened from there too, so
a session that was never opened is simply absent (the `session` proxy would assert).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Flask, Request, Response, request

from . import logs, metrics, security
from .session_interface import OPENED_SESSION, BffSession


def request_id(incoming: str) -> str:
    """The caller's `X-Request-ID` when it looks like one (a trace crossing the ingress), else a
    fresh one."""
    return incoming if logs.REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()


STARTED = "bff.started"


class StampRequests:
    """WSGI middleware (Flask's documented `app.wsgi_app` wrapping): each request's id and start
    time, set before the request context is pushed and the session opened."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ[STARTED] = time.perf_counter()
        environ[logs.REQUEST_ID_KEY] = request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        return self.wsgi_app(environ, start_response)


def _resolved(proxy: Any) -> Any:
    """The object behind one of Flask's context-local proxies, looked up once for the hook."""
    return proxy._get_current_object()


def init_app(app: Flask, https: bool) -> None:
    def begin_request() -> None:
        security.refuse_oversized_body(_resolved(request))

    def finish_request(response: Response) -> Response:
        req: Request = _resolved(request)
        environ = req.environ
        started, rid = environ[STARTED], environ[logs.REQUEST_ID_KEY]
        headers = response.headers
        security.add_security_headers(headers, response.mimetype, https)
        headers["X-Request-ID"] = rid
        elapsed = time.perf_counter() - started
        rule = req.url_rule.rule if req.url_rule else "unmatched"
        status = response.status_code
        metrics.request_duration((rule, metrics.method_label(req.method), metrics.status_label(status))).observe(
            elapsed
        )
        if logs.access_log.isEnabledFor(logging.INFO):
            current: BffSession | None = environ.get(OPENED_SESSION)
            sub = current.get("sub") if current else None
            ref = current.ref if current and sub else None
            logs.write_access_line(
                request_id=rid,
                method=req.method,
                path=req.path,  # never the query string: it can carry authorization codes
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                session=ref.handle if ref else None,
                sub=sub,
            )
        return response

    app.wsgi_app = StampRequests(app.wsgi_app)  # type: ignore[method-assign]
    app.before_request(begin_request)
    app.after_request(finish_request)
