"""I4: every bad input gets a clear 4xx JSON error, changes nothing in Redis, and costs no one
else their session. Each case prepares what it needs, then returns the one bad request."""

from __future__ import annotations

import time
from dataclasses import replace
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from app.crypto import CookieSealer
from app.login import LOGIN_TTL, attempt_cookie_name, open_attempt, seal_attempt
from dev.agent import set_cookies
from dev.stack import DEV_SECRET_KEY


def _edit_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def _state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def unknown_state(a, stack, make_agent):
    url = f"{a.bff_url}/bff/callback?" + urlencode({"state": "unknown", "code": "x", "iss": stack.issuer})
    return lambda: a.get(url, allow_redirects=False)


def expired_state(a, stack, make_agent):
    callback = a.authorize("mallory")
    # The attempt cookie as the BFF would have sealed it LOGIN_TTL + 1 seconds ago.
    sealer = CookieSealer(DEV_SECRET_KEY, "bff sealed cookies v1")
    name = attempt_cookie_name("bff-login-", _state_of(callback))
    now_ms = time.time_ns() // 1_000_000
    attempt = open_attempt(sealer, name, a.cookies[name], now_ms)
    old = replace(attempt, started_ms=now_ms - (LOGIN_TTL + 1) * 1000)
    a.cookies.set(name, seal_attempt(sealer, name, old), domain="localhost.local", path="/bff/")
    return lambda: a.get(callback, allow_redirects=False)


def state_from_another_browser(a, stack, make_agent):
    callback = a.authorize("mallory")  # the attacker signs in at the IdP...
    victim = make_agent()  # ...and lures a victim's browser to the callback (login CSRF)
    return lambda: victim.get(callback, allow_redirects=False)


def replayed_callback(a, stack, make_agent):
    callback = a.authorize("mallory")
    assert a.get(callback, allow_redirects=False).status_code == 302
    return lambda: a.get(callback, allow_redirects=False)


def replayed_code_with_a_fresh_state(a, stack, make_agent):
    used = a.authorize("mallory")
    assert a.get(used, allow_redirects=False).status_code == 302
    fresh = a.authorize("mallory")
    return lambda: a.get(_edit_query(fresh, code=parse_qs(urlsplit(used).query)["code"][0]), allow_redirects=False)


def idp_refused_access(a, stack, make_agent):
    callback = a.cancel_at_idp()  # the person pressed Cancel at the IdP: error=access_denied
    assert "error=access_denied" in callback
    return lambda: a.get(callback, allow_redirects=False)


def wrong_iss_parameter(a, stack, make_agent):
    callback = _edit_query(a.authorize("mallory"), iss="https://evil.example/")
    return lambda: a.get(callback, allow_redirects=False)


def missing_iss_parameter_the_idp_advertises(a, stack, make_agent):
    callback = _edit_query(a.authorize("mallory"), iss=None)
    return lambda: a.get(callback, allow_redirects=False)


def missing_code(a, stack, make_agent):
    callback = _edit_query(a.authorize("mallory"), code=None)
    return lambda: a.get(callback, allow_redirects=False)


def tampered_cookie(a, stack, make_agent):
    a.login("mallory")
    value = a.session_cookie
    a.cookies.set("bff", value[:-1] + ("A" if value[-1] != "A" else "B"), domain="localhost.local")
    return a.user


def malformed_cookie(a, stack, make_agent):
    return lambda: a.get(f"{a.bff_url}/bff/user", headers={"X-CSRF": "1", "Cookie": 'bff="\\x00;;;=="'})


def user_without_csrf_header(a, stack, make_agent):
    a.login("mallory")
    return lambda: a.user(csrf=False)


def logout_without_csrf_header(a, stack, make_agent):
    a.login("mallory")
    return lambda: a.logout(csrf=False)


def logout_with_wrong_csrf_value(a, stack, make_agent):
    a.login("mallory")
    return lambda: a.post(f"{a.bff_url}/bff/logout", headers={"X-CSRF": "0"})


def oversized_logout_request(a, stack, make_agent):
    a.login("mallory")
    return lambda: a.post(f"{a.bff_url}/bff/logout", headers={"X-CSRF": "1"}, data=b"x" * 200_000)


def bad_return_url(value):
    def case(a, stack, make_agent):
        return lambda: a.get(f"{a.bff_url}/bff/login", params={"returnUrl": value}, allow_redirects=False)

    case.__name__ = f"return_url_{value!r}"
    return case


def bad_prompt(a, stack, make_agent):
    return lambda: a.get(f"{a.bff_url}/bff/login", params={"prompt": "bogus"}, allow_redirects=False)


def unknown_endpoint(a, stack, make_agent):
    return lambda: a.get(f"{a.bff_url}/bff/nothing-here", headers={"X-CSRF": "1"})


CASES = [
    (unknown_state, 400, "invalid_state"),
    (expired_state, 400, "invalid_state"),
    (state_from_another_browser, 400, "invalid_state"),
    (replayed_callback, 400, "invalid_state"),
    (replayed_code_with_a_fresh_state, 400, "invalid_grant"),
    (idp_refused_access, 400, "access_denied"),
    (wrong_iss_parameter, 400, "invalid_issuer"),
    (missing_iss_parameter_the_idp_advertises, 400, "invalid_issuer"),
    (missing_code, 400, "invalid_request"),
    (tampered_cookie, 401, "unauthenticated"),
    (malformed_cookie, 401, "unauthenticated"),
    (user_without_csrf_header, 403, "missing_csrf_header"),
    (logout_without_csrf_header, 403, "missing_csrf_header"),
    (logout_with_wrong_csrf_value, 403, "missing_csrf_header"),
    (oversized_logout_request, 413, "request_too_large"),
    (bad_prompt, 400, "invalid_prompt"),
    (unknown_endpoint, 404, "not_found"),
] + [
    (bad_return_url(value), 400, "invalid_return_url")
    for value in [
        "//evil.example",
        "/.//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\t/evil",
        "",
    ]
]


@pytest.mark.parametrize(("case", "status", "code"), CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input_gets_a_clear_error_changes_nothing_and_loses_no_session(stack, make_agent, case, status, code):
    bystander = make_agent()
    bystander.login("bystander")
    attacker = make_agent()
    bad_request = case(attacker, stack, make_agent)
    before = stack.snapshot()
    response = bad_request()

    assert response.status_code == status
    body = response.json()
    assert body["error"] == code and isinstance(body["error_description"], str) and body["error_description"]
    assert set(body) == {"error", "error_description"}
    assert "bff" not in set_cookies(response), "no session cookie may be set or cleared"
    assert stack.snapshot() == before
    assert bystander.user().status_code == 200


def test_a_failed_sign_in_shows_people_a_page_not_json(stack, agent):
    callback = agent.cancel_at_idp()
    response = agent.get(callback, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert "access_denied" in response.text and "Traceback" not in response.text
    assert 'href="/"' in response.text or "href='/'" in response.text


def test_a_tampered_cookie_does_not_end_the_real_session(stack, agent):
    agent.login("oscar")
    real = agent.session_cookie
    agent.cookies.set("bff", real[:-2] + "xx", domain="localhost.local")
    assert agent.user().status_code == 401
    agent.cookies.set("bff", real, domain="localhost.local")
    assert agent.user().json()["sub"] == "oscar"
