"""What every request pays, app-wide, in one before hook and one after hook.

It used to be five hooks in three modules (request id, body size, security headers, access line,
latency metric). Each hook is one more dispatch through Flask's `ensure_sync`, and each reached
`request`, `g` and `session` through their context-local proxies again, about 25 proxy lookups a
request. Here each proxy is resolved once and the parts are plain functions of what they need,
in the order the contract wants: the request id first (every log line of the request carries
it), the response's headers before the access line and the metric, which time the whole of it.
Blueprint hooks (`Cache-Control: no-store` on /bff, the proxy's counter) still run before these.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Flask, Request, Response, g, request, session
from flask.ctx import _AppCtxGlobals

from . import logs, metrics, security
from .session_interface import BffSession


def request_id(incoming: str) -> str:
    """The caller's `X-Request-ID` when it looks like one (a trace crossing the ingress), else a
    fresh one."""
    return incoming if logs.REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()


def _resolved(proxy: Any) -> Any:
    """The object behind one of Flask's context-local proxies, looked up once for the hook."""
    return proxy._get_current_object()


def init_app(app: Flask, https: bool) -> None:
    def begin_request() -> None:
        req: Request = _resolved(request)
        ctx_globals: _AppCtxGlobals = _resolved(g)
        ctx_globals.started = time.perf_counter()
        ctx_globals.request_id = request_id(req.environ.get("HTTP_X_REQUEST_ID", ""))
        security.refuse_oversized_body(req)

    def finish_request(response: Response) -> Response:
        req: Request = _resolved(request)
        ctx_globals: _AppCtxGlobals = _resolved(g)
        # Absent when the request failed before `begin_request` (opening the session, say).
        started = ctx_globals.get("started") or time.perf_counter()
        rid = ctx_globals.get("request_id", "")
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
            current: BffSession | None = _resolved(session)
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

    app.before_request(begin_request)
    app.after_request(finish_request)
