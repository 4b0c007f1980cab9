"""Logout wins over a refresh in flight. The IdP issues the refresh's new tokens and
holds its answer back; meanwhile the session ends (logout, back-channel logout or the CLI); then
the answer is released. The refresh must not bring the session back, and the refresh token it
was just given must not stay usable at the IdP."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_backchannel_logout import logout_token, post_logout_token

from dev.stack import ROOT, VENV_BIN, bff_env


def end_by_logout(stack, agent, sub):
    assert agent.logout().status_code == 200


def end_by_backchannel_logout(stack, agent, sub):
    assert post_logout_token(stack, logout_token(stack, sub=sub)).status_code == 200


def end_by_cli_revoke(stack, agent, sub):
    subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi", "sessions", "revoke", "--user", sub],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **bff_env(stack.bff_url, stack.issuer, stack.redis_url)},
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.mark.parametrize("end_session", [end_by_logout, end_by_backchannel_logout, end_by_cli_revoke])
def test_a_session_ended_while_its_refresh_is_in_flight_stays_ended(stack, make_agent, end_session):
    sub = f"racer-{end_session.__name__}"
    agent = make_agent()
    agent.login(sub)
    cookie = agent.session_cookie
    stack.expire_access_token(cookie)
    with ThreadPoolExecutor(1) as pool, stack.refresh_held_at_the_idp():
        call = pool.submit(agent.get, f"{agent.bff_url}/api/echo/x", headers={"X-CSRF": "1"}, timeout=30)
        stack.wait_until_refresh_held()
        end_session(stack, agent, sub)
        assert not stack.has_session(cookie)
    response = call.result()
    assert response.status_code == 401 and response.json()["error"] == "session_expired"

    assert not stack.has_session(cookie), "the refresh brought the ended session back"
    agent.cookies.set("bff", cookie, domain="localhost.local")
    assert agent.user().status_code == 401
    issued = stack.latest_tokens()
    assert issued["grant_type"] == "refresh_token" and issued["refresh_token"]
    reuse = stack.idp_token_request(grant_type="refresh_token", refresh_token=issued["refresh_token"])
    assert reuse.status_code == 400, "the refresh token the racing refresh received is still usable"
