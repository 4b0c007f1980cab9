"""The product's story, end to end on real Redis, the real IdP and the BFF under gunicorn."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import msgspec

from app.crypto import TokenCipher, generate_key, parse_encryption_keys
from app.keyspace import SessionRef, record_key
from dev.agent import set_cookies
from dev.forms import is_login_form


def test_sign_in_see_the_user_sign_out_of_app_and_idp_then_the_idp_asks_for_credentials_again(stack, agent):
    agent.login("alice")
    tokens = stack.latest_tokens()
    cookie = agent.session_cookie
    assert agent.user().json()["sub"] == "alice"
    assert stack.has_session(cookie)

    response = agent.logout()
    assert response.status_code == 200
    logout_url = response.json()["logout_url"]

    # The Redis record is gone and the cookie is cleared.
    assert not stack.has_session(cookie)
    assert all(cookie.encode() not in value for value in stack.snapshot().values() if value)
    assert agent.session_cookie is None
    assert agent.user().status_code == 401
    # The refresh token was revoked at the IdP.
    refused = stack.idp_token_request(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    # The default logout URL names the client, not a token.
    query = parse_qs(urlsplit(logout_url).query)
    assert logout_url.startswith(f"{stack.issuer}/session/end?")
    assert set(query) == {"client_id", "post_logout_redirect_uri", "state"}
    assert query["post_logout_redirect_uri"] == [f"{stack.bff_url}/bff/logged-out"] and query["state"][0]

    # Following logout_url ends the IdP session and lands back on the SPA...
    landed = agent.follow_logout_url(logout_url)
    assert landed.url.startswith(f"{stack.bff_url}/") and "BFF demo" in landed.text
    # ...so the next sign-in shows the IdP's login form instead of silently signing in again.
    assert is_login_form(agent.start_login().text)


def test_refresh_token_of_a_live_session_works_at_the_idp(stack, agent):
    """The control for the revocation check above: the same request succeeds before logout."""
    agent.login("carol")
    refresh_token = stack.latest_tokens()["refresh_token"]
    refreshed = stack.idp_token_request(grant_type="refresh_token", refresh_token=refresh_token)
    assert refreshed.status_code == 200


def test_user_shows_claims_and_session_expiry_but_no_token_or_protocol_claim(stack, signed_in):
    before = int(time.time())
    body = signed_in.user().json()
    assert set(body) == {"sub", "claims", "session"}
    assert body["claims"]["email"] == "alice@example.com" and body["claims"]["name"] == "Alice"
    assert not {"nonce", "at_hash", "c_hash", "s_hash"} & set(body["claims"])
    assert before < body["session"]["expires_at"] <= before + 8 * 3600 + 5
    text = signed_in.user().text
    assert not any(token in text for token in stack.issued_tokens())


def test_signed_out_user_gets_401_json(agent):
    response = agent.user()
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated" and response.json()["error_description"]


def test_session_cookie_is_httponly_lax_host_only_and_carries_256_bits(stack, agent):
    callback = agent.authorize("dave")
    response = agent.get(callback, allow_redirects=False)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = set_cookies(response)["bff"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path"} <= attributes and "domain" not in attributes
    assert "SameSite=Lax" in cookie and "Path=/" in cookie
    assert len(agent.session_cookie.split(".")[1]) >= 43  # 32 random bytes, base64url


def test_logout_clears_the_cookie_with_the_attributes_it_was_set_with(stack, agent):
    set_at_login = set_cookies(agent.get(agent.authorize("erin"), allow_redirects=False))["bff"]
    cleared = set_cookies(agent.logout())["bff"]
    assert "Max-Age=0" in cleared or "expires=Thu, 01 Jan 1970" in cleared
    for attribute in ("HttpOnly", "Path=/", "SameSite=Lax"):
        assert attribute in set_at_login and attribute in cleared


def test_sign_in_never_reuses_the_pre_login_session_id(stack, make_agent):
    a = make_agent()
    a.login("frank")
    first = a.session_cookie
    a.login("frank")
    assert a.session_cookie != first
    assert not stack.has_session(first)

    # The new session refreshes: the old one's refresh token came from the same IdP grant, which
    # revoking it would have revoked too (node oidc-provider and Keycloak do), so it is only deleted.
    stack.expire_access_token(a.session_cookie)
    assert a.get(f"{stack.bff_url}/api/echo/x", headers={"X-CSRF": "1"}).status_code == 200
    assert stack.issued.latest()["grant_type"] == "refresh_token"

    planted = make_agent()
    planted.cookies.set("bff", "attacker-chosen-session-id-0123456789abcdef", domain="localhost.local")
    planted.login("grace")
    assert planted.session_cookie != "attacker-chosen-session-id-0123456789abcdef"
    assert planted.user().json()["sub"] == "grace"


def test_two_tabs_signing_in_at_once_both_succeed(stack, agent):
    first = agent.authorize("heidi", return_url="/one")
    second = agent.authorize("heidi", return_url="/two")
    one = agent.get(first, allow_redirects=False)
    two = agent.get(second, allow_redirects=False)
    assert (one.status_code, one.headers["Location"]) == (302, "/one")
    assert (two.status_code, two.headers["Location"]) == (302, "/two")
    assert agent.user().json()["sub"] == "heidi"


def test_return_url_is_honoured_after_sign_in(agent):
    response = agent.get(agent.authorize("ivan", return_url="/orders?tab=open"), allow_redirects=False)
    assert response.status_code == 302 and response.headers["Location"] == "/orders?tab=open"


def test_logout_without_a_session_still_returns_the_idp_end_session_url(stack, agent):
    response = agent.logout()
    assert response.status_code == 200
    logout_url = response.json()["logout_url"]
    assert logout_url.startswith(f"{stack.issuer}/session/end?")
    query = parse_qs(urlsplit(logout_url).query)
    assert query["post_logout_redirect_uri"] == [f"{stack.bff_url}/bff/logged-out"] and query["state"][0]


def test_logout_by_get_is_405(agent):
    response = agent.get(f"{agent.bff_url}/bff/logout", headers={"X-CSRF": "1"})
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def test_id_token_hint_mode_sends_the_latest_id_token_and_still_ends_the_idp_session(stack, make_agent):
    a = make_agent(stack.bff_hint_url, record=False)
    a.login("judy")
    id_token = stack.latest_tokens()["id_token"]
    logout_url = a.logout().json()["logout_url"]
    query = parse_qs(urlsplit(logout_url).query)
    assert query["id_token_hint"] == [id_token]
    assert (
        query["client_id"]
        and query["state"][0]
        and query["post_logout_redirect_uri"] == [f"{stack.bff_hint_url}/bff/logged-out"]
    )
    a.follow_logout_url(logout_url)
    assert is_login_form(a.start_login().text)


def test_read_only_request_writes_nothing_to_redis(stack, signed_in):
    def calls():
        stats = stack.redis.info("commandstats")
        return {name: stat["calls"] for name, stat in stats.items()}

    before = calls()
    assert signed_in.user().status_code == 200
    after = calls()
    changed = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    changed.pop("cmdstat_info", None)
    assert changed == {"cmdstat_getex": 1}


def test_every_key_the_bff_writes_has_a_ttl(stack, signed_in):
    signed_in.get(f"{stack.bff_url}/bff/login", allow_redirects=False)  # a pending attempt: a cookie, no key
    keys = list(stack.redis.scan_iter())
    assert stack.session_keys()
    assert all(stack.redis.ttl(key) > 0 for key in keys)


def test_logout_after_the_session_idled_out_still_ends_the_idp_session(stack, make_agent):
    """The seed's bug: the BFF session is gone (idle expiry), the IdP's is not. Logout must
    still send the browser to the IdP's end-session endpoint, or the next login is silent."""
    a = make_agent()
    a.login("idler")
    stack.redis.delete(record_key(SessionRef.from_session_id(a.session_cookie)))  # as idle expiry would
    response = a.logout()
    assert response.status_code == 200
    logout_url = response.json()["logout_url"]
    assert logout_url.startswith(f"{stack.issuer}/session/end?")
    query = parse_qs(urlsplit(logout_url).query)
    assert query["client_id"] and query["state"][0] and "id_token_hint" not in query
    a.follow_logout_url(logout_url)
    assert is_login_form(a.start_login().text)


def test_logout_without_a_session_in_hint_mode_uses_the_client_id_form(stack, make_agent):
    a = make_agent(stack.bff_hint_url)
    response = a.logout()
    query = parse_qs(urlsplit(response.json()["logout_url"]).query)
    assert response.json()["logout_url"].startswith(f"{stack.issuer}/session/end?")
    assert query["client_id"] and query["state"][0] and "id_token_hint" not in query


def seal_with_a_retired_key(stack, cookie: str) -> None:
    """Re-seal the session's tokens with a key no BFF is configured with any more."""
    key = record_key(SessionRef.from_session_id(cookie))
    record = msgspec.msgpack.decode(stack.redis.get(key))
    retired = TokenCipher(parse_encryption_keys(generate_key()))
    record["tokens"] = retired.seal(b'{"access_token": "x"}', SessionRef.from_session_id(cookie).key_id.encode())
    stack.redis.set(key, msgspec.msgpack.encode(record), keepttl=True)


def test_logout_in_hint_mode_with_tokens_under_a_retired_key_still_ends_the_session(stack, make_agent):
    a = make_agent(stack.bff_hint_url)
    a.login("rotated")
    cookie = a.session_cookie
    seal_with_a_retired_key(stack, cookie)
    response = a.logout()
    assert response.status_code == 200
    query = parse_qs(urlsplit(response.json()["logout_url"]).query)
    assert query["client_id"] and "id_token_hint" not in query
    assert not stack.has_session(cookie) and a.user().status_code == 401


def test_an_api_call_with_tokens_under_a_retired_key_ends_the_session_with_session_expired(stack, make_agent):
    a = make_agent()
    a.login("rotated-api")
    cookie = a.session_cookie
    seal_with_a_retired_key(stack, cookie)
    response = a.get(f"{a.bff_url}/api/echo/x", headers={"X-CSRF": "1"})
    assert response.status_code == 401 and response.json()["error"] == "session_expired"
    assert not stack.has_session(cookie)


def test_sign_in_and_out_cycles_leave_no_key_behind(stack, make_agent):
    """Every key a session creates (record, user and sid indexes, sid pointer, all-sessions
    entry) goes when it ends; the store-level soak runs 300 cycles, this one 20 of the real flow."""
    before, indexed = set(stack.redis.scan_iter()), stack.redis.zcard("bff:sessions")
    a = make_agent()
    for _ in range(20):
        a.login("cycler")
        a.follow_logout_url(a.logout().json()["logout_url"])
    left = set(stack.redis.scan_iter()) - before
    replay_cache = {k for k in left if k.startswith(b"bff:jti:")}  # the IdP's logout tokens, not sessions
    assert left - replay_cache == set()
    assert all(0 < stack.redis.ttl(k) <= 11 * 60 for k in replay_cache)
    assert stack.redis.zcard("bff:sessions") == indexed
