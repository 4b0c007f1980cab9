"""DESIGN §10: which token each upstream receives, by its policy in BFF_API_UPSTREAMS, with and
without a session, through the Python proxy and through /bff/authz (what nginx asks)."""

from __future__ import annotations

import json
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support.stack_fixtures import AUTHZ_SECRET

from dev.stack import API_AUDIENCE, CLIENT_ID, REPORTS_AUDIENCE

CSRF = {"X-CSRF": "1"}


def call(agent, name: str, path: str = "x", method: str = "GET", headers: dict | None = None):
    return agent.request(method, f"{agent.bff_url}/api/{name}/{path}", headers={**CSRF, **(headers or {})})


def authz(agent, name: str, path: str = "x"):
    headers = {**CSRF, "X-BFF-Authz-Secret": AUTHZ_SECRET, "X-Original-URI": f"/api/{name}/{path}"}
    return agent.get(f"{agent.bff_url}/bff/authz", headers=headers)


def arrived(stack):
    (seen,) = stack.capture.seen
    stack.capture.clear()
    return seen


def test_a_none_upstream_gets_no_token_signed_in_or_not_and_the_browsers_authorization_stays_behind(
    stack, make_agent, signed_in
):
    anonymous = make_agent()
    for agent in (anonymous, signed_in):
        stack.capture.clear()
        response = call(agent, "cap-public", "items", headers={"Authorization": "Bearer forged"})
        assert response.status_code == 200
        seen = arrived(stack)
        assert seen.target == "/public-api/items" and seen.header("Authorization") is None
    answer = authz(signed_in, "cap-public")
    assert answer.status_code == 204 and "X-BFF-Authorization" not in answer.headers


def test_a_user_or_none_upstream_gets_the_users_token_only_when_someone_is_signed_in(stack, make_agent, signed_in):
    stack.capture.clear()
    assert call(make_agent(), "cap-maybe").status_code == 200
    assert arrived(stack).header("Authorization") is None
    assert call(signed_in, "cap-maybe").status_code == 200
    token = arrived(stack).header("Authorization")
    assert token and token.removeprefix("Bearer ") in stack.issued_tokens()
    assert authz(make_agent(), "cap-maybe").status_code == 204
    assert authz(signed_in, "cap-maybe").headers["X-BFF-Authorization"] == token


def test_a_user_upstream_still_refuses_the_anonymous_as_if_it_did_not_exist(stack, make_agent):
    anonymous = make_agent()
    stack.capture.clear()
    for name in ("cap", "no-such-api"):
        response = call(anonymous, name)
        assert (response.status_code, response.json()["error"]) == (401, "unauthenticated")
        assert authz(anonymous, name).status_code == 401
    assert stack.capture.seen == []


@pytest.mark.parametrize("name", ["cap-public", "cap-maybe"])
def test_an_anonymous_call_to_an_open_upstream_still_needs_the_csrf_header_and_grows_nothing(stack, make_agent, name):
    anonymous = make_agent()
    before = stack.redis.dbsize()
    stack.capture.clear()
    refused = anonymous.get(f"{anonymous.bff_url}/api/{name}/x")
    assert refused.status_code == 403 and stack.capture.seen == []
    for _ in range(20):
        assert call(anonymous, name).status_code == 200
    assert stack.redis.dbsize() == before
    assert not [c for c in anonymous.cookies if c.name.endswith("bff")]


def client_grants(stack, resource: str) -> list[dict]:
    return [
        r for r in stack.issued.responses() if r["grant_type"] == "client_credentials" and r["resource"] == resource
    ]


def test_a_client_upstream_shares_one_client_credentials_token_across_two_workers_and_twenty_callers(
    stack, make_bff, make_agent
):
    """Anyone may call it, signed in or not; the IdP sees one token request for 20 concurrent
    calls spread over two gunicorn workers, and the API sees the BFF's client, not a user."""
    name = f"jobs-{secrets.token_hex(4)}"  # its own cache key: nothing cached by earlier tests
    upstreams = {name: {"url": stack.reports_url, "token": "client", "resource": REPORTS_AUDIENCE}}
    bff = make_bff(workers=2, BFF_API_UPSTREAMS=json.dumps(upstreams))
    before = len(client_grants(stack, REPORTS_AUDIENCE))
    agents = [make_agent(bff.url) for _ in range(20)]
    barrier = threading.Barrier(20)

    def one(agent):
        barrier.wait()
        return call(agent, name, "jobs/1")

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, agents))
    assert [a.status_code for a in answers] == [200] * 20
    assert len(client_grants(stack, REPORTS_AUDIENCE)) - before == 1
    body = answers[0].json()
    assert body["sub"] == body["client_id"] == CLIENT_ID and body["aud"] == REPORTS_AUDIENCE
    assert len({a.json()["token_expires_at"] for a in answers}) == 1  # one token, shared
    # Nothing of it per caller: the token, its lock and no session, whoever called.
    assert not [c for a in agents for c in a.cookies if c.name.endswith("bff")]


def test_a_client_token_the_idp_refuses_is_a_502_and_asked_again_at_most_every_two_seconds(stack, make_bff, make_agent):
    name = f"nope-{secrets.token_hex(4)}"
    upstreams = {name: {"url": stack.reports_url, "token": "client", "resource": "urn:bff-dev:unknown-api"}}
    bff = make_bff(BFF_API_UPSTREAMS=json.dumps(upstreams))
    agent = make_agent(bff.url)
    before = len([r for r in stack.issued.responses() if r["grant_type"] == "client_credentials"])
    answers = [call(agent, name) for _ in range(10)]
    assert {(a.status_code, a.json()["error"]) for a in answers} == {(502, "token_unavailable")}
    assert len([r for r in stack.issued.responses() if r["grant_type"] == "client_credentials"]) == before
    assert "invalid_target" in Path(bff.service.log_path).read_text()


def test_a_user_upstream_for_another_resource_gets_the_users_token_for_it_by_one_refresh(stack, make_bff, make_agent):
    """RFC 8707 §2.2: the sign-in asks for both resources; the other one's token comes from a
    refresh-token grant naming it, once, then from the session record; the sign-in's token and
    its rotated refresh token keep working, and no refresh token is ever presented twice."""
    upstreams = {
        "echo": stack.echo_url,
        "reports": {"url": stack.reports_url, "resource": REPORTS_AUDIENCE},
    }
    bff = make_bff(registered=True, BFF_API_UPSTREAMS=json.dumps(upstreams), BFF_OIDC_RESOURCE=API_AUDIENCE)
    agent = make_agent(bff.url)
    agent.login("rita")
    first = call(agent, "reports", "r/1")
    assert first.status_code == 200 and first.json()["sub"] == "rita" and first.json()["aud"] == REPORTS_AUDIENCE
    assert call(agent, "reports", "r/2").json()["token_expires_at"] == first.json()["token_expires_at"]
    echo = call(agent, "echo", "e/1")
    assert echo.status_code == 200 and echo.json()["sub"] == "rita" and echo.json()["aud"] == API_AUDIENCE
    mine = [
        r
        for r in stack.issued.responses()
        if r.get("resource") == REPORTS_AUDIENCE and r["grant_type"] == "refresh_token"
    ]
    assert len([r for r in mine if r["access_token"] and r["presented_refresh_token"]]) >= 1
    spent = stack.issued.spent_refresh_tokens()
    assert len(spent) == len(set(spent))
    # The sign-in's own token refreshed afterwards uses the refresh token the resource refresh rotated.
    stack.expire_access_token(agent.session_cookie)
    assert call(agent, "echo", "e/2").status_code == 200
    spent = stack.issued.spent_refresh_tokens()
    assert len(spent) == len(set(spent))
    # Sealed with the others: the record in Redis holds neither token in the clear.
    for key in stack.redis.scan_iter("bff:{*}:s:*"):
        raw = stack.redis.get(key) or b""
        assert not [t for t in stack.issued_tokens() if t.encode() in raw]


def test_authz_hands_nginx_the_token_each_policy_chooses(stack, make_bff, make_agent):
    name = f"jobs-{secrets.token_hex(4)}"
    upstreams = {
        "reports": {"url": stack.reports_url, "resource": REPORTS_AUDIENCE},
        name: {"url": stack.reports_url, "token": "client", "resource": REPORTS_AUDIENCE},
    }
    bff = make_bff(
        registered=True,
        BFF_API_UPSTREAMS=json.dumps(upstreams),
        BFF_OIDC_RESOURCE=API_AUDIENCE,
        BFF_AUTHZ_SECRET=AUTHZ_SECRET,
    )
    agent = make_agent(bff.url)
    assert authz(agent, "reports").status_code == 401
    anonymous_client = authz(agent, name)
    assert anonymous_client.status_code == 204 and anonymous_client.headers["X-BFF-Authorization"].startswith("Bearer ")
    agent.login("nora")
    # Signed in or not, a client upstream gets the BFF's own token (the one cached), never the user's.
    assert authz(agent, name).headers["X-BFF-Authorization"] == anonymous_client.headers["X-BFF-Authorization"]
    reports = authz(agent, "reports").headers["X-BFF-Authorization"].removeprefix("Bearer ")
    assert (
        requests.get(f"{stack.reports_url}/x", headers={"Authorization": f"Bearer {reports}"}, timeout=5).json()["sub"]
        == "nora"
    )
