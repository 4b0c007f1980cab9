"""Over https the cookies are `__Host-` prefixed and Secure, and are deleted with the same
attributes (a browser ignores a `__Host-` deletion that lacks Secure)."""

from __future__ import annotations

import pytest

from app import create_app
from app.config import load_settings
from dev import forge
from dev.stack import bff_env

PUBLIC_URL = "https://app.example.com"


@pytest.fixture
def https_app(stack):
    # Not registered at the IdP, which a pushed authorization request would check at /bff/login.
    return create_app(load_settings(bff_env(PUBLIC_URL, stack.issuer, stack.redis_url, BFF_OIDC_PAR="never")))


@pytest.fixture
def https_client(https_app):
    with https_app.test_client() as client:
        client.environ_base["wsgi.url_scheme"] = "https"
        yield client


def sign_in(app, client):
    """A stored session as the callback would create it, without a trip through the IdP."""
    forged = forge.session_record(app.extensions["bff"].store, "alice")
    with client.session_transaction() as session:
        session.sid = forged.session_id
        session.update(forged.record)


def _set_cookie_headers(response, name):
    return [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]


def test_session_cookie_over_https_is_host_prefixed_secure_httponly_lax(https_app, https_client):
    sign_in(https_app, https_client)
    cookie = https_client.get_cookie("__Host-bff")
    assert cookie is not None
    assert cookie.secure and cookie.http_only and cookie.same_site == "Lax" and cookie.path == "/"
    assert not cookie.domain or cookie.domain in ("localhost", "app.example.com")


def test_logout_over_https_deletes_the_host_cookie_with_secure_and_same_attributes(https_app, https_client):
    sign_in(https_app, https_client)
    response = https_client.post("/bff/logout", headers={"X-CSRF": "1"})
    assert response.status_code == 200
    (deletion,) = _set_cookie_headers(response, "__Host-bff")
    for attribute in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax", "Max-Age=0"):
        assert attribute in deletion
    assert "Domain" not in deletion
    assert https_client.get_cookie("__Host-bff") is None


def test_sign_in_attempt_cookie_over_https_is_secure_prefixed_and_only_for_bff_paths(https_client):
    response = https_client.get("/bff/login?returnUrl=/")
    assert response.status_code == 302
    (attempt,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("__Secure-bff-login-")]
    for attribute in ("Secure", "HttpOnly", "Path=/bff/", "SameSite=Lax"):
        assert attribute in attempt
    assert "Domain" not in attempt
