"""Endpoints for operators and orchestrators: liveness, readiness, metrics."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify
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
    """Ready to serve: Redis answers, the IdP's metadata is loaded (or loads now), and the
    client's configuration is one the IdP accepts (DESIGN §10: named by its variable)."""
    failed = []
    try:
        extensions.services().redis.ping()
    except RedisError:
        failed.append("the session store (Redis) does not answer")
    try:
        extensions.provider().metadata  # noqa: B018 - loads and caches it
    except OidcError:
        failed.append("the IdP's metadata cannot be loaded")
    else:
        try:
            extensions.provider().client_auth_method()
        except OidcError as error:
            failed.append(f"the IdP does not accept this client's configuration: {error.description}")
    if failed:
        return error_response(503, "not_ready", "Not ready: " + "; ".join(failed) + ".")
    return jsonify(status="ready")


@bp.get("/metrics")
def scrape() -> Response:
    body, content_type = metrics.scrape(extensions.store().count_upper_bound)
    return Response(body, content_type=content_type)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
