"""/api/<name>/...: token relay to allow-listed upstreams, streamed, with clear failures."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import pytest
import requests

from dev.agent import set_cookies
from dev.echo_api import release_path


def api(agent, path, method="GET", csrf=True, **kwargs):
    headers = {"X-CSRF": "1"} if csrf else {}
    headers.update(kwargs.pop("headers", {}))
    return agent.request(method, f"{agent.bff_url}/api/{path}", headers=headers, **kwargs)


def test_the_api_sees_the_signed_in_user_through_a_bearer_token_the_browser_never_holds(stack, signed_in):
    response = api(signed_in, "echo/orders/7?tab=open&x=%2F")
    assert response.status_code == 200
    body = response.json()
    assert body["sub"] == "alice"
    assert (body["method"], body["path"], body["query"]) == ("GET", "/orders/7", "tab=open&x=%2F")
    assert not [t for t in stack.issued_tokens() if t in response.text]


def test_a_base_url_with_a_path_is_prefixed(signed_in):
    assert api(signed_in, "echo-base/items").json()["path"] == "/base/path/items"


def test_the_bff_cookie_csrf_header_hop_by_hop_and_unlisted_headers_stay_behind(stack, signed_in):
    signed_in.cookies.set("theme", "dark", domain="localhost.local")
    response = api(
        signed_in,
        "echo/headers",
        headers={
            "Accept-Language": "kept",
            "X-Custom": "not on the allow-list",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "Authorization": "Bearer forged",
        },
    )
    headers = {k.lower(): v for k, v in response.json()["headers"].items()}
    assert headers["accept-language"] == "kept"
    assert "x-csrf" not in headers and "x-drop-me" not in headers and "x-custom" not in headers
    assert headers.get("cookie") == "theme=dark"  # the SPA's own cookies pass; the session cookie does not
    assert signed_in.session_cookie not in str(headers)
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == stack.bff_url.split("://")[1]
    assert headers["x-forwarded-prefix"] == "/api/echo"
    assert response.json()["sub"] == "alice"  # our token, not the forged Authorization header


def test_the_upstream_cannot_set_cookies_on_the_spa_origin(signed_in):
    response = api(signed_in, "echo/anything")
    assert "upstream" not in set_cookies(response)
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_method_and_body_are_forwarded(signed_in, method):
    body = secrets.token_bytes(5000)
    echoed = api(signed_in, "echo/things", method=method, data=body).json()
    assert echoed["method"] == method
    assert (echoed["body_length"], echoed["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


def test_a_large_body_streams_up_and_a_large_response_streams_down(signed_in):
    body = os.urandom(900 * 1024)
    echoed = api(signed_in, "echo/upload", method="POST", data=body).json()
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    chunked = api(signed_in, "echo/upload", method="POST", data=iter([body[:1000], body[1000:]])).json()
    assert chunked["body_sha256"] == hashlib.sha256(body).hexdigest()
    size = 25 * 1024 * 1024
    with api(signed_in, f"echo/bytes/{size}", stream=True) as response:
        assert response.headers["Content-Length"] == str(size)
        assert sum(len(chunk) for chunk in response.iter_content(256 * 1024)) == size


def test_response_bytes_are_relayed_as_they_arrive(signed_in):
    name = secrets.token_hex(8)
    release = Path(release_path(name))
    try:
        with api(signed_in, f"echo/drip/{name}", stream=True, timeout=8) as response:
            first = response.raw.read(len(b"first chunk;"))
            assert first == b"first chunk;"  # arrived while the upstream still holds the rest back
            release.touch()
            assert response.raw.read() == b"second chunk"
    finally:
        release.unlink(missing_ok=True)


def test_upstream_401_and_403_pass_through_unchanged(signed_in):
    for status in (401, 403):
        response = api(signed_in, f"echo/status/{status}")
        assert response.status_code == status and response.json()["sub"] == "alice"


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("nowhere/x", {}, 404, "unknown_upstream"),
        ("closed/x", {}, 502, "upstream_unavailable"),
        ("echo/slow?seconds=5", {}, 504, "upstream_timeout"),
        ("echo/big", {"method": "POST", "data": b"x" * (2 * 1024 * 1024)}, 413, "request_too_large"),
        ("echo/x", {"csrf": False}, 403, "missing_csrf_header"),
    ],
    ids=["unknown-upstream", "refused", "timeout", "body-too-large", "missing-csrf"],
)
def test_proxy_failures_are_clear_json_errors(signed_in, path, kwargs, status, code):
    response = api(signed_in, path, **kwargs)
    assert response.status_code == status
    assert response.json()["error"] == code and response.json()["error_description"]
    assert api(signed_in, "echo/still-fine").status_code == 200


def test_without_a_session_the_proxy_answers_401(agent):
    response = api(agent, "echo/x")
    assert response.status_code == 401 and response.json()["error"] == "unauthenticated"


def test_calling_the_upstream_without_the_bff_gets_401(stack):
    assert requests.get(f"{stack.echo_url}/x", timeout=5).status_code == 401
