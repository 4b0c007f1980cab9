"""The demo single-page app, served as static files (turn off with BFF_SERVE_SPA=false)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC = Path(__file__).parent / "static"

bp = Blueprint("spa", __name__)

# The page runs only its own script and talks only to its own origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@bp.after_request
def harden(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY  # nosniff & co.: security.py
    return response


@bp.get("/")
def index() -> Response:
    return send_from_directory(STATIC, "index.html")


@bp.get("/app.js")
def script() -> Response:
    return send_from_directory(STATIC, "app.js")
