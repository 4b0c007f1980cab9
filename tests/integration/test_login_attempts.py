"""Sign-in attempts before the IdP answers: they live in sealed per-attempt cookies, not
in Redis, so anonymous traffic cannot grow server state; a browser holds at most three of them,
so abandoned attempts cannot lock it out with an oversized Cookie header; and every callback
outcome deletes the attempt's cookie."""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit

import pytest

from dev.agent import set_cookies

MAX_ATTEMPTS = 3


def login_cookies(agent) -> dict[str, str]:
    return {c.name: c.value for c in agent.cookies if c.name.startswith("bff-login-")}


def cookie_header_size(agent) -> int:
    return len("; ".join(f"{c.name}={c.value}" for c in agent.cookies))


def test_two_thousand_anonymous_login_starts_add_nothing_to_redis(stack, make_bff):
    # PAR off: with it each start is also one request to the IdP (not to Redis), whose bounds
    # are test_token_policies_hostile.py's; here 2 000 of them would only make the test slow.
    bff = make_bff(workers=2, BFF_OIDC_PAR="never")
    before = stack.redis.dbsize()
    memory_before = stack.redis.info("memory")["used_memory"]
    parts = urlsplit(bff.url)
    target = "/bff/login?" + urlencode({"returnUrl": "/" + "r" * 1000})

    def starts(count: int) -> list[int]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        statuses = []
        for _ in range(count):
            conn.request("GET", target)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        conn.close()
        return statuses

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for batch in pool.map(starts, [250] * 8) for s in batch]
    assert statuses == [302] * 2000
    assert stack.redis.dbsize() == before
    assert stack.redis.info("memory")["used_memory"] - memory_before < 64 * 1024


def test_abandoned_attempts_keep_at_most_three_cookies_and_sign_in_still_works(make_agent):
    agent = make_agent()
    for _ in range(150):
        response = agent.get(f"{agent.bff_url}/bff/login", params={"returnUrl": "/x"}, allow_redirects=False)
        assert response.status_code == 302
        assert len(login_cookies(agent)) <= MAX_ATTEMPTS
    assert len(login_cookies(agent)) == MAX_ATTEMPTS
    assert cookie_header_size(agent) < 4096
    agent.login("patient")
    assert agent.user().json()["sub"] == "patient"
    # The sign-in dropped the oldest abandoned attempt and deleted its own cookie when it finished.
    assert len(login_cookies(agent)) == MAX_ATTEMPTS - 1


def test_a_fourth_attempt_drops_the_oldest_and_the_three_newest_can_still_finish(make_agent):
    agent = make_agent()
    callbacks = [agent.authorize("tabby") for _ in range(4)]
    assert len(login_cookies(agent)) == MAX_ATTEMPTS
    oldest = agent.get(callbacks[0], allow_redirects=False)
    assert oldest.status_code == 400 and oldest.json()["error"] == "invalid_state"
    assert agent.get(callbacks[3], allow_redirects=False).status_code == 302
    assert agent.user().json()["sub"] == "tabby"


def test_an_idp_error_callback_deletes_its_attempt_cookie(make_agent):
    agent = make_agent()
    callback = agent.cancel_at_idp()
    assert len(login_cookies(agent)) == 1
    response = agent.get(callback, allow_redirects=False)
    assert response.status_code == 400 and response.json()["error"] == "access_denied"
    (name,) = [n for n in set_cookies(response) if n.startswith("bff-login-")]
    assert "Max-Age=0" in set_cookies(response)[name]
    assert login_cookies(agent) == {}


def test_a_refused_callback_deletes_the_attempt_cookie_it_names(stack, make_agent):
    agent = make_agent()
    callback = agent.authorize("mallory").replace("iss=", "iss=x")
    response = agent.get(callback, allow_redirects=False)
    assert response.status_code == 400 and response.json()["error"] == "invalid_issuer"
    assert login_cookies(agent) == {}


def test_a_replayed_callback_with_the_attempt_cookie_kept_is_refused_by_the_idp(stack, make_agent):
    agent = make_agent()
    callback = agent.authorize("mallory")
    kept = login_cookies(agent)
    assert agent.get(callback, allow_redirects=False).status_code == 302
    replay = make_agent()
    for name, value in kept.items():
        replay.cookies.set(name, value, domain="localhost.local")
    response = replay.get(callback, allow_redirects=False)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert "bff" not in set_cookies(response)


@pytest.mark.parametrize(
    "return_url", ["/" + "a" * 1023, "/" + '"' * 1023, "/" + "\U0001f600" * 225], ids=["ascii", "quotes", "emoji"]
)
def test_fat_return_urls_can_never_swell_the_cookie_header_past_what_servers_accept(make_agent, return_url):
    """A cross-site page navigating the victim to /bff/login three times with the fattest
    returnUrl it can: either refused, or three cookies that still fit an 8 KB header line."""
    victim = make_agent()
    for _ in range(MAX_ATTEMPTS):
        start = victim.get(f"{victim.bff_url}/bff/login", params={"returnUrl": return_url}, allow_redirects=False)
        assert start.status_code in (302, 400)
    assert all(len(c.name) + len(c.value) <= 2100 for c in victim.cookies)
    assert cookie_header_size(victim) < 6 * 1024
    assert victim.get(f"{victim.bff_url}/bff/login", allow_redirects=False).status_code == 302


def test_attempt_cookies_are_only_sent_to_the_bff_endpoints(make_agent):
    """Path=/bff/: however many attempts a browser holds, the SPA's pages and /api never carry them."""
    agent = make_agent()
    response = agent.get(f"{agent.bff_url}/bff/login", allow_redirects=False)
    (attempt,) = [line for name, line in set_cookies(response).items() if name.startswith("bff-login-")]
    assert "Path=/bff/" in attempt and "HttpOnly" in attempt and "SameSite=Lax" in attempt
    page = agent.get(f"{agent.bff_url}/")
    assert "bff-login-" not in page.request.headers.get("Cookie", "")
