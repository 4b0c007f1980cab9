"""Security headers on every response the BFF sends: nosniff and no Referer on all,
a CSP on every HTML page (the SPA's own, a strict one elsewhere), HSTS when served over https."""

from __future__ import annotations

import pytest
import requests
from test_https_cookies import PUBLIC_URL, https_app, https_client  # noqa: F401 - fixtures

from dev.agent import Agent

HTML = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}


@pytest.fixture(scope="module")
def signed_in(stack):
    with Agent(stack.bff_url) as agent:
        agent.login("headers")
        yield agent


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/bff/user", {"X-CSRF": "1"}),
        ("GET", "/bff/login", {}),
        ("GET", "/bff/callback?state=nope", HTML),
        ("GET", "/bff/callback?state=nope", {}),
        ("POST", "/bff/logout", {"X-CSRF": "1"}),
        ("POST", "/bff/backchannel-logout", {}),
        ("GET", "/api/cap/hostile-headers", {"X-CSRF": "1"}),
        ("GET", "/api/nowhere/x", {"X-CSRF": "1"}),
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/metrics", {}),
        ("GET", "/", {}),
        ("GET", "/app.js", {}),
        ("GET", "/no-such-page", HTML),
        ("DELETE", "/bff/user", {}),
    ],
)
def test_every_response_carries_nosniff_and_no_referrer_and_html_a_csp(stack, signed_in, method, path, headers):
    response = signed_in.request(method, f"{stack.bff_url}{path}", headers=headers, allow_redirects=False)
    assert response.headers.get("X-Content-Type-Options") == "nosniff", response.status_code
    assert response.headers.get("Referrer-Policy") == "no-referrer"
    if response.headers.get("Content-Type", "").startswith("text/html"):
        csp = response.headers.get("Content-Security-Policy", "")
        assert "default-src" in csp and "frame-ancestors 'none'" in csp
    assert "Strict-Transport-Security" not in response.headers  # plain http: HSTS would be ignored, and the
    # upstream's max-age=0 must not pass either


def test_an_error_page_allows_no_script_at_all(stack):
    response = requests.get(f"{stack.bff_url}/bff/callback?state=nope", headers=HTML, timeout=10)
    assert response.status_code == 400 and response.headers["Content-Type"].startswith("text/html")
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_over_https_every_response_carries_hsts(https_client):  # noqa: F811
    for path in ("/healthz", "/bff/user", "/no-such-page"):
        hsts = https_client.get(path).headers.get("Strict-Transport-Security", "")
        assert hsts.startswith("max-age=") and int(hsts.split("=")[1].split(";")[0]) >= 31536000
