"""How a refresh answer is classified, over real HTTP: IdPs differ, terse bodies included.

A tiny local token endpoint plays each answer; Authlib's client authentication is real."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from app.errors import IdpUnavailable, RefreshRefused, TokenRefused
from app.idp_documents import ProviderMetadata
from app.oidc import Provider

ANSWER: dict = {}


class TokenEndpoint(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers["Content-Length"])
        ANSWER["form"] = self.rfile.read(length).decode()
        ANSWER["authorization"] = self.headers.get("Authorization")
        status, content_type, body = ANSWER["reply"]
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def provider():
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/token"

    class LocalProvider(Provider):
        @property
        def metadata(self):
            return ProviderMetadata(issuer="https://idp", authorization_endpoint="a", token_endpoint=url, jwks_uri="j")

    yield LocalProvider(
        issuer="https://idp",
        client_id="spa",
        client_secret="s e/cret",
        scopes="openid",
        redirect_uri="x",
        timeout=5,
        revocation_timeout=2,
    )
    server.shutdown()


@pytest.mark.parametrize(
    "reply",
    [
        (400, "application/json", b'{"error": "invalid_grant"}'),
        (400, None, b""),
        (401, "text/plain", b"Unauthorized"),
        (403, "text/html", b"<h1>Forbidden</h1>"),
    ],
    ids=["invalid_grant", "empty-400", "plain-401", "html-403"],
)
def test_any_4xx_refresh_answer_is_a_refusal_whatever_its_body(provider, reply):
    ANSWER["reply"] = reply
    with pytest.raises(RefreshRefused):
        provider.refresh("rt-1")


@pytest.mark.parametrize(
    "reply",
    [
        (503, "text/plain", b"down for maintenance"),
        (200, "text/html", b"<html>a captive portal</html>"),
        (200, "application/json", b'{"token_type": "Bearer"}'),
    ],
    ids=["503", "non-json-200", "no-access-token"],
)
def test_an_idp_that_cannot_answer_is_unavailable_not_a_refusal(provider, reply):
    ANSWER["reply"] = reply
    with pytest.raises(IdpUnavailable):
        provider.refresh("rt-1")


def test_a_refresh_answer_without_a_new_refresh_token_is_returned_as_is(provider):
    ANSWER["reply"] = (200, "application/json", json.dumps({"access_token": "at-2", "expires_in": 60}).encode())
    assert provider.refresh("rt-1") == {"access_token": "at-2", "expires_in": 60}
    assert "grant_type=refresh_token" in ANSWER["form"] and "refresh_token=rt-1" in ANSWER["form"]
    user, secret = base64.b64decode(ANSWER["authorization"].split()[1]).decode().split(":")
    assert (user, secret) == ("spa", "s+e%2Fcret")  # RFC 6749 §2.3.1: form-encoded, then Basic


def _form() -> dict[str, list[str]]:
    return parse_qs(ANSWER["form"])


def test_a_refresh_for_another_resource_sends_it_and_a_scope(provider):
    ANSWER["reply"] = (200, "application/json", json.dumps({"access_token": "at-r", "expires_in": 60}).encode())
    assert provider.refresh("rt-1", resource="https://reports.example", scope="reports read")["access_token"] == "at-r"
    form = _form()
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["rt-1"]
    assert form["resource"] == ["https://reports.example"] and form["scope"] == ["reports read"]
    provider.refresh("rt-1")
    assert "resource" not in _form() and "scope" not in _form()  # the sign-in's own token: as before


def test_a_refused_scope_for_another_api_keeps_the_session_and_names_the_idps_code(provider):
    """The scope is checked before the refresh token is spent, at every IdP: one API refused,
    not the user."""
    ANSWER["reply"] = (400, "application/json", b'{"error": "invalid_scope", "error_description": "no"}')
    with pytest.raises(TokenRefused) as refused:
        provider.refresh("rt-1", scope="reports")
    assert refused.value.idp_error == "invalid_scope" and refused.value.status == 502


@pytest.mark.parametrize(
    "reply",
    [
        (400, "application/json", b'{"error": "invalid_target"}'),
        (400, "application/json", b'{"error": "invalid_grant"}'),
        (401, "text/html", b"<h1>no</h1>"),
        (400, "application/json", b'["invalid_scope"]'),
    ],
    ids=["invalid_target", "invalid_grant", "html-401", "not-an-object"],
)
def test_any_other_refusal_for_another_api_ends_the_session(provider, reply):
    """node oidc-provider spends (rotates) the refresh token before it checks the resource, then
    answers invalid_target: the session's refresh token may be gone, so the session ends cleanly
    now rather than by a reuse at its next refresh, which would revoke the whole grant."""
    ANSWER["reply"] = reply
    with pytest.raises(RefreshRefused):
        provider.refresh("rt-1", resource="https://reports.example")


def test_a_dead_refresh_token_ends_the_session_whichever_resource_asked(provider):
    ANSWER["reply"] = (400, "application/json", b'{"error": "invalid_grant"}')
    with pytest.raises(RefreshRefused):
        provider.refresh("rt-1", scope="reports")


def test_client_credentials_ask_with_the_clients_authentication_for_a_resource_and_scope(provider):
    ANSWER["reply"] = (200, "application/json", json.dumps({"access_token": "at-c", "expires_in": 300}).encode())
    assert provider.client_credentials(resource="urn:jobs", scope="run")["access_token"] == "at-c"
    assert _form() == {"grant_type": ["client_credentials"], "resource": ["urn:jobs"], "scope": ["run"]}
    assert ANSWER["authorization"].startswith("Basic ")
    ANSWER["reply"] = (400, "application/json", b'{"error": "unauthorized_client"}')
    with pytest.raises(TokenRefused) as refused:
        provider.client_credentials()
    assert refused.value.idp_error == "unauthorized_client"
    ANSWER["reply"] = (200, "application/json", b'{"access_token": 5}')
    with pytest.raises(IdpUnavailable):
        provider.client_credentials()
