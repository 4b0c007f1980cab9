"""GET /bff/authz, nginx's `auth_request` target (DESIGN §3, §9), called here as nginx calls it:
the browser's own headers plus `X-Original-URI` and the shared secret. It must apply exactly the
`/api` rules, and a browser must never obtain a token from it."""

from __future__ import annotations

import json

import pytest
import requests
from support.stack_fixtures import AUTHZ_SECRET
from test_proxy_hostile import ESCAPING_PATHS

from dev.agent import Agent

TOKEN_HEADER = "X-BFF-Authorization"
PATH_HEADER = "X-BFF-Upstream-Path"


@pytest.fixture(scope="module")
def browser(stack):
    with Agent(stack.bff_url) as agent:
        agent.login("authz-user")
        yield agent


def nginx_asks(agent, target: str | None, secret: str | None = AUTHZ_SECRET, csrf: bool = True, **headers: str):
    sent = dict(headers)
    if target is not None:
        sent["X-Original-URI"] = target
    if secret is not None:
        sent["X-BFF-Authz-Secret"] = secret
    if csrf:
        sent["X-CSRF"] = "1"
    return agent.get(f"{agent.bff_url}/bff/authz", headers=sent, allow_redirects=False, timeout=10)


def test_nginx_gets_the_token_the_proxy_would_send_and_the_checked_upstream_path(stack, browser):
    answer = nginx_asks(browser, "/api/cap/items/7?tab=open&x=%2F")
    assert answer.status_code == 204, answer.text
    assert answer.content == b""
    assert answer.headers[PATH_HEADER] == "/base/items/7?tab=open&x=%2F"
    assert answer.headers["Cache-Control"] == "no-store"
    stack.capture.clear()
    proxied = browser.get(f"{stack.bff_url}/api/cap/items/7", headers={"X-CSRF": "1"})
    assert proxied.status_code == 200
    assert answer.headers[TOKEN_HEADER] == stack.capture.seen[-1].header("Authorization")
    assert answer.headers[TOKEN_HEADER].startswith("Bearer ey")


def test_the_spas_own_cookies_are_handed_to_nginx_without_the_bffs(stack, browser):
    cookie = f"theme=dark; bff={browser.session_cookie}; bff-login-abc=x; lang=fr"
    answer = nginx_asks(browser, "/api/cap/x", Cookie=cookie)
    assert answer.status_code == 204
    assert answer.headers["X-BFF-Upstream-Cookie"] == "theme=dark; lang=fr"
    alone = nginx_asks(browser, "/api/cap/x")
    assert "X-BFF-Upstream-Cookie" not in alone.headers


@pytest.mark.parametrize(
    ("target", "upstream_path"),
    [
        ("/api/cap/a%20b", "/base/a%20b"),
        ("/api/cap/caf%C3%A9/%E2%82%AC", "/base/caf%C3%A9/%E2%82%AC"),
        ("/api/cap/", "/base/"),
        ("/api/echo-base/x?y=1", "/base/path/x?y=1"),
    ],
)
def test_the_upstream_path_is_the_raw_path_under_the_base_byte_for_byte(browser, target, upstream_path):
    answer = nginx_asks(browser, target)
    assert (answer.status_code, answer.headers.get(PATH_HEADER)) == (204, upstream_path)


@pytest.mark.parametrize("secret", [None, "", "wrong", AUTHZ_SECRET[:-1], AUTHZ_SECRET + "x", AUTHZ_SECRET.upper()])
def test_without_the_exact_secret_the_endpoint_does_not_exist_even_for_a_signed_in_browser(browser, secret):
    answer = nginx_asks(browser, "/api/cap/x", secret=secret)
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"
    assert TOKEN_HEADER not in answer.headers and PATH_HEADER not in answer.headers


def test_a_bff_without_a_configured_secret_has_no_authz_endpoint(stack):
    with Agent(stack.bff_hint_url) as agent:
        agent.login("authz-off")
        answer = nginx_asks(agent, "/api/cap/x")
        assert answer.status_code == 404 and TOKEN_HEADER not in answer.headers


def test_a_browser_cannot_obtain_a_token_cross_site_or_by_navigating(stack, browser):
    cookie = {"Cookie": f"bff={browser.session_cookie}"}
    evil = {"Origin": "https://evil.example", **cookie}
    preflight = requests.options(
        f"{stack.bff_url}/bff/authz",
        headers={**evil, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-csrf"},
        timeout=10,
    )
    navigation = requests.get(
        f"{stack.bff_url}/bff/authz",
        headers={**cookie, "Sec-Fetch-Mode": "navigate", "Accept": "text/html", "X-Original-URI": "/api/cap/x"},
        timeout=10,
    )
    simple = requests.get(f"{stack.bff_url}/bff/authz", headers={**evil, "X-Original-URI": "/api/cap/x"}, timeout=10)
    assert (navigation.status_code, simple.status_code) == (404, 404)
    assert preflight.status_code in (200, 404)  # Flask's automatic OPTIONS: an Allow header, nothing more
    for answer in (preflight, navigation, simple):
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
        assert TOKEN_HEADER not in answer.headers and "Bearer" not in answer.text and "ey" not in answer.text


@pytest.mark.parametrize(
    ("target", "csrf", "status", "error"),
    [
        ("/api/cap/x", False, 403, "missing_csrf_header"),
        ("/api/nope/x", True, 404, "unknown_upstream"),
        (None, True, 400, "invalid_path"),
        ("/bff/user", True, 400, "invalid_path"),
        ("/api/cap", True, 400, "invalid_path"),
        ("/api/ca%70/x", True, 400, "invalid_path"),
    ],
)
def test_the_api_rules_apply(browser, target, csrf, status, error):
    answer = nginx_asks(browser, target, csrf=csrf)
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert TOKEN_HEADER not in answer.headers


def test_anonymous_callers_get_401_before_anything_else_is_looked_at(stack):
    for target in ("/api/cap/x", "/api/nope/x", "/api/cap/../x"):
        answer = _anonymous(stack, target)
        assert (answer.status_code, answer.json()["error"]) == (401, "unauthenticated")


def _anonymous(stack, target):
    headers = {"X-Original-URI": target, "X-BFF-Authz-Secret": AUTHZ_SECRET, "X-CSRF": "1"}
    return requests.get(f"{stack.bff_url}/bff/authz", headers=headers, timeout=10)


@pytest.mark.parametrize("target", ESCAPING_PATHS)
def test_a_path_that_could_leave_the_upstream_base_is_refused(browser, target):
    answer = nginx_asks(browser, target)
    assert answer.status_code == 400, (target, answer.text)
    assert answer.json()["error"] == "invalid_path" and TOKEN_HEADER not in answer.headers


def test_decisions_are_counted_and_the_token_is_never_logged(stack, browser):
    answer = nginx_asks(browser, "/api/cap/logged")
    token = answer.headers[TOKEN_HEADER].removeprefix("Bearer ")
    assert token not in stack.bff_log.read_text()
    metrics = requests.get(f"{stack.bff_url}/metrics", timeout=10).text
    assert 'bff_authz_decisions_total{status="204",upstream="cap"}' in metrics
    lines = [json.loads(line) for line in stack.bff_log.read_text().splitlines() if line.startswith("{")]
    assert any(e.get("path") == "/bff/authz" and e.get("status") == 204 for e in lines)
