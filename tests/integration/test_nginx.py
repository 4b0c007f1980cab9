"""Behind a real nginx, over https with the `__Host-bff` cookie (DESIGN §9): the configuration is
the one `flask nginx-config` writes from the BFF's own settings, with a certificate made for this
run. `/api/cap/` is offloaded (nginx asks /bff/authz, then proxies itself); a second nginx runs
the same BFF in `python` mode (every /api call through the BFF's own proxy)."""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest
from support.tls_fixtures import SECRET, TlsStack

# One process runs these (make test: --dist loadgroup), so that the TLS stack behind nginx and
# chromium start once per run rather than once per process.
pytestmark = pytest.mark.xdist_group("nginx-and-browser")


@pytest.fixture(scope="module")
def browser(tls):
    with tls.agent() as agent:
        agent.login("nginx-user")
        yield agent


def access_lines(tls: TlsStack) -> list[dict]:
    return [json.loads(line) for line in tls.bff_log.read_text().splitlines() if '"bff.access"' in line]


def test_sign_in_over_https_sets_the_host_prefixed_secure_cookie_and_user_answers(tls, browser):
    (cookie,) = [c for c in browser.cookies if c.name.endswith("bff")]
    assert cookie.name == "__Host-bff" and cookie.secure and cookie.path == "/"
    user = browser.user()
    assert user.status_code == 200 and user.json()["sub"] == "nginx-user"
    assert user.headers["Strict-Transport-Security"].startswith("max-age=")
    assert user.raw.version == 11  # requests speaks HTTP/1.1; browsers get HTTP/2 (see the browser test)


def test_an_offloaded_api_call_reaches_the_upstream_from_nginx_with_the_token_and_the_allowed_headers(
    stack, tls, browser
):
    stack.capture.clear()
    before = len(access_lines(tls))
    headers = {"X-CSRF": "1", "X-Evil": "1", "X-BFF-Authz-Secret": "guess", "Accept-Language": "fr"}
    headers["Cookie"] = f"theme=dark; __Host-bff={browser.session_cookie}"
    response = browser.get(f"{tls.url}/api/cap/items/7?tab=open&x=%2F", headers=headers)
    assert response.status_code == 200, response.text
    (seen,) = stack.capture.seen
    assert seen.target == "/base/items/7?tab=open&x=%2F"
    assert seen.header("Authorization") == f"Bearer {tls.issued.latest()['access_token']}"
    assert seen.header("Accept-Language") == "fr"
    assert seen.header("X-Forwarded-Prefix") == "/api/cap"
    assert seen.header("X-Evil") is None and seen.header("X-BFF-Authz-Secret") is None
    assert seen.header("Cookie") == "theme=dark"  # the SPA's own cookie, never the BFF's
    paths = [line["path"] for line in access_lines(tls)[before:]]
    assert paths == ["/bff/authz"], "nginx proxied it, the BFF only answered the subrequest"


def test_the_same_call_in_python_mode_goes_through_the_bffs_proxy(stack, tls, browser):
    stack.capture.clear()
    # The same BFF and cookie (cookies belong to the host, whatever the port), the other nginx.
    response = browser.get(f"{tls.python_url}/api/cap/items/8", headers={"X-CSRF": "1"})
    assert response.status_code == 200
    assert stack.capture.seen[-1].target == "/base/items/8"
    assert access_lines(tls)[-1]["path"] == "/api/cap/items/8"


@pytest.mark.parametrize(
    ("path", "csrf", "status", "error"),
    [
        ("/api/cap/x", False, 403, "missing_csrf_header"),
        ("/api/cap/%2e%2e/secret", True, 400, "invalid_path"),
        ("/api/cap/..;/secret", True, 400, "invalid_path"),
        ("/api/nope/x", True, 404, "unknown_upstream"),
        ("/api/closed/x", True, 502, "upstream_unavailable"),
    ],
)
def test_refusals_and_failures_reach_the_spa_as_the_bffs_json(stack, tls, browser, path, csrf, status, error):
    stack.capture.clear()
    response = browser.get(f"{tls.url}{path}", headers={"X-CSRF": "1"} if csrf else {})
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert stack.capture.seen == []


def test_anonymous_callers_get_the_bffs_401(tls):
    with tls.agent() as agent:
        response = agent.get(f"{tls.url}/api/cap/x", headers={"X-CSRF": "1"})
        assert (response.status_code, response.json()["error"]) == (401, "unauthenticated")


def test_upstream_headers_that_act_on_the_whole_origin_never_reach_the_browser(stack, tls, browser):
    response = browser.get(f"{tls.url}/api/cap/hostile-headers", headers={"X-CSRF": "1"})
    assert response.status_code == 200
    assert response.json() != {}  # the upstream's own body: its X-Accel-Redirect was not obeyed
    for name in ("Set-Cookie", "Clear-Site-Data", "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
                 "X-Accel-Redirect", "NEL", "Report-To", "Refresh", "Alt-Svc", "CDN-Cache-Control"):  # fmt: skip
        assert name not in response.headers, name
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_no_one_outside_can_reach_the_authz_endpoint_even_with_the_secret(tls, browser):
    for path in ("/_bff_authz", "/bff/authz"):
        response = browser.get(
            f"{tls.url}{path}",
            headers={"X-CSRF": "1", "X-BFF-Authz-Secret": SECRET, "X-Original-URI": "/api/cap/x"},
        )
        assert response.status_code == 404, path
        assert "X-BFF-Authorization" not in response.headers and "Bearer" not in response.text


def test_logout_over_https_ends_the_session_and_returns_the_idps_logout_url(tls):
    with tls.agent() as agent:
        agent.login("nginx-logout")
        response = agent.logout()
        assert response.status_code == 200
        assert response.json()["logout_url"].startswith("http://127.0.0.1:")
        assert agent.user().status_code == 401


def test_thirty_two_slow_clients_do_not_delay_anyone_else(tls):
    """gunicorn has 2 × 8 threads here; each slow socket would hold one without nginx in front."""
    host, port = "localhost", int(tls.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(tls.certificates.ca))
    sockets = []
    try:
        for _ in range(32):
            raw = socket.create_connection((host, port), timeout=5)
            wrapped = context.wrap_socket(raw, server_hostname=host)
            wrapped.sendall(b"POST /bff/logout HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n")
            sockets.append(wrapped)
        for wrapped in sockets:  # half a body each: nginx waits for the rest, gunicorn sees nothing
            wrapped.sendall(b"X-CSRF: 1\r\n\r\n" + b"x" * 10)
        started = time.monotonic()
        with tls.agent() as agent:
            response = agent.get(f"{tls.url}/healthz")
        assert response.status_code == 200
        assert time.monotonic() - started < 2
    finally:
        for wrapped in sockets:
            wrapped.close()


def test_a_request_with_a_hundred_cookies_still_fits_nginxs_and_gunicorns_buffers(tls, browser):
    cookie = "; ".join(f"spa_cookie_{i:03d}=" + "v" * 60 for i in range(100))
    cookie += f"; __Host-bff={browser.session_cookie}"
    assert 7_500 < len(cookie) < 8_000  # a Cookie line near nginx's and the browsers' 8 KB habit
    with tls.agent() as agent:
        response = agent.get(f"{tls.url}/bff/user", headers={"Cookie": cookie, "X-CSRF": "1"})
    assert response.status_code == 200, response.text
