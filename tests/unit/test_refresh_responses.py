"""How a refresh answer is classified, over real HTTP: IdPs differ, terse bodies included.

A tiny local token endpoint plays each answer; Authlib's client authentication is real."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.errors import IdpUnavailable, RefreshRefused
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
