"""Failures never show a stack trace or an exception's text, to clients or in logs."""

from __future__ import annotations

import logging

import pytest

from app import create_app
from app.config import load_settings
from app.keyspace import new_session_id

ENV = {
    "BFF_PUBLIC_URL": "http://localhost:8000",
    "BFF_OIDC_ISSUER": "http://127.0.0.1:1/realms/none",
    "BFF_OIDC_CLIENT_ID": "spa",
    "BFF_OIDC_CLIENT_SECRET": "s3cret",
    "BFF_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens on port 1
}


@pytest.fixture
def app():
    app = create_app(load_settings(ENV))

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret-token-in-an-exception-message")

    return app


def test_an_unexpected_error_is_a_500_json_without_its_message_or_traceback(app, caplog):
    caplog.set_level(logging.DEBUG)
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": "server_error",
        "error_description": "The server failed to handle this request.",
    }
    assert "secret-token" not in caplog.text and "Traceback" not in caplog.text
    assert "RuntimeError" in caplog.text


def test_redis_down_answers_503_session_store_unavailable(app):
    client = app.test_client()
    client.set_cookie("bff", new_session_id("alice"))
    response = client.get("/bff/user", headers={"X-CSRF": "1"})
    assert response.status_code == 503
    assert response.get_json()["error"] == "session_store_unavailable"


def test_healthz_needs_neither_redis_nor_the_idp(app):
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}


def test_behind_trusted_proxies_the_client_address_and_scheme_are_theirs():
    app = create_app(load_settings({**ENV, "BFF_TRUSTED_PROXIES": "1"}))

    @app.get("/whoami")
    def whoami():
        from flask import request

        return {"ip": request.remote_addr, "scheme": request.scheme}

    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    assert app.test_client().get("/whoami", headers=headers).get_json() == {"ip": "203.0.113.7", "scheme": "https"}
    untrusting = create_app(load_settings(ENV))
    untrusting.add_url_rule("/whoami", view_func=app.view_functions["whoami"])
    assert untrusting.test_client().get("/whoami", headers=headers).get_json()["ip"] == "127.0.0.1"
