"""Endpoints for operators and orchestrators: liveness, readiness, metrics."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, jsonify, request
from redis.exceptions import RedisError

from . import extensions, metrics
from .errors import OidcError
from .security import error_response

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up; touches nothing else, so a Redis outage never restarts the pods."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Ready to serve: Redis answers and the IdP's metadata is loaded (or loads now)."""
    failed = []
    try:
        extensions.services().redis.ping()
    except RedisError:
        failed.append("the session store (Redis) does not answer")
    try:
        extensions.provider().metadata  # noqa: B018 - loads and caches it
    except OidcError:
        failed.append("the IdP's metadata cannot be loaded")
    if failed:
        return error_response(503, "not_ready", "Not ready: " + "; ".join(failed) + ".")
    return jsonify(status="ready")


@bp.get("/metrics")
def scrape() -> Response:
    body, content_type = metrics.scrape(extensions.store().count_upper_bound)
    return Response(body, content_type=content_type)


def observe(response: Response) -> Response:
    """Latency by route (the rule, not the path: label values stay few)."""
    rule = request.url_rule.rule if request.url_rule else "unmatched"
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    labels = (rule, metrics.method_label(request.method), metrics.status_label(response.status_code))
    metrics.request_duration(labels).observe(elapsed)
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.after_request(observe)
