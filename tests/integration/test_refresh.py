"""Refresh under concurrency: one refresh per expiry across 4 gunicorn workers, no lost session.

A private stack: an IdP whose access tokens live 2 seconds, whose refresh tokens rotate (a reused
one revokes the whole grant, as strict IdPs do) and whose token endpoint answers after 250 ms like
a distant one, the sample API, and a BFF with 4 workers that refreshes 1 second before expiry.
The tests wait for real expiry: that is what they test.
"""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.stack_fixtures import AUTHZ_SECRET
from support.tls_fixtures import nginx_site

from dev.agent import Agent
from dev.stack import BASIC_AUTH, IssuedTokens, bff_env, free_port, start_bff, start_echo, start_idp, start_nginx
from dev.tls import make_certificates

ACCESS_TOKEN_TTL = 2


@dataclass
class RefreshStack:
    bff_url: str
    issuer: str
    issued: IssuedTokens
    nginx_url: str  # https, offloading /api/echo/ through /bff/authz
    ca: str
    bff_log: Path

    def paths_served(self) -> list[str]:
        return [json.loads(line)["path"] for line in self.bff_log.read_text().splitlines() if '"bff.access"' in line]


@pytest.fixture(scope="module")
def refresh_stack(stack, workdir):
    idp_port, echo_port, bff_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{idp_port}/realms/refresh"
    bff_url = f"http://localhost:{bff_port}"
    tokens_file = workdir / "refresh-issued.jsonl"
    services = [
        start_idp(
            idp_port,
            issuer,
            workdir,
            [bff_url],
            IDP_ACCESS_TOKEN_TTL=str(ACCESS_TOKEN_TTL),
            IDP_TOKEN_DELAY_MS="250",
            IDP_ISSUED_TOKENS_FILE=str(tokens_file),
        )
    ]
    try:
        services.append(start_echo(echo_port, issuer, workdir))
        env = bff_env(
            bff_url,
            issuer,
            stack.redis_url,
            BFF_API_UPSTREAMS=json.dumps({"echo": f"http://127.0.0.1:{echo_port}"}),
            BFF_REFRESH_SKEW="1",
            BFF_AUTHZ_SECRET=AUTHZ_SECRET,
        )
        services.append(start_bff(bff_port, env, workdir / "bff-refresh.log", workers=4))
        certificates = make_certificates(workdir / "refresh-tls")
        nginx_port = free_port()
        site = nginx_site(
            env,
            *("--bff", f"127.0.0.1:{bff_port}", "--listen", str(nginx_port), "--http-redirect", "0"),
            *("--cert", str(certificates.certificate), "--key", str(certificates.key)),
        )
        services.append(start_nginx(nginx_port, site, workdir, name="nginx-refresh"))
        nginx_url = f"https://localhost:{nginx_port}"
        log = workdir / "bff-refresh.log"
        yield RefreshStack(bff_url, issuer, IssuedTokens(tokens_file), nginx_url, str(certificates.ca), log)
    finally:
        for service in reversed(services):
            service.stop()


def wait_until_expired(access_token: str) -> None:
    """Sleep past the token's exp: the BFF must now refresh before forwarding."""
    payload = access_token.split(".")[1]
    expires_at = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
    time.sleep(max(0.0, expires_at - time.time() + 0.2))


def assert_each_refresh_token_spent_once(spent: list[str], expiries: int) -> None:
    """The lock's promise: a rotating refresh token is never presented twice (the IdP would treat
    the second use as theft and revoke the grant). Each expiry needs a refresh; a further one is
    legitimate when the callers outlast the new token's refresh point (1 s here) on a slow run."""
    assert len(spent) >= expiries
    assert len(set(spent)) == len(spent), "a refresh token was spent twice"


def call_api_concurrently(agent: Agent, callers: int) -> list[int]:
    def call(_):
        return agent.get(f"{agent.bff_url}/api/echo/data", headers={"X-CSRF": "1"}, timeout=30).status_code

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(call, range(callers)))


def test_fifty_concurrent_calls_right_after_expiry_all_succeed_and_no_refresh_token_is_spent_twice(refresh_stack):
    with Agent(refresh_stack.bff_url, record=False) as agent:
        agent.adapters["http://"].init_poolmanager(connections=64, maxsize=64)
        agent.login("racer")
        wait_until_expired(refresh_stack.issued.latest()["access_token"])
        statuses = call_api_concurrently(agent, 50)
        assert statuses == [200] * 50
        assert_each_refresh_token_spent_once(refresh_stack.issued.spent_refresh_tokens(), expiries=1)


def test_fifty_concurrent_api_calls_through_nginxs_offload_right_after_expiry_make_one_refresh(refresh_stack):
    """The same promise when nginx proxies /api itself, asking /bff/authz for each call."""
    with Agent(refresh_stack.bff_url, record=False) as agent:
        agent.adapters["https://"].init_poolmanager(connections=64, maxsize=64)
        agent.verify, agent.trust_env = refresh_stack.ca, False
        agent.login("nginx-racer")  # at the BFF itself; the cookie (host-wide) then goes to nginx too
        spent_before = len(refresh_stack.issued.spent_refresh_tokens())
        wait_until_expired(refresh_stack.issued.latest()["access_token"])
        served_before = len(refresh_stack.paths_served())

        def call(_):
            return agent.get(f"{refresh_stack.nginx_url}/api/echo/data", headers={"X-CSRF": "1"}, timeout=30)

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(call, range(50)))
        assert [a.status_code for a in answers] == [200] * 50, {a.status_code: a.text for a in answers}
        assert refresh_stack.paths_served()[served_before:] == ["/bff/authz"] * 50  # none fell back to Python
        assert_each_refresh_token_spent_once(refresh_stack.issued.spent_refresh_tokens()[spent_before:], expiries=1)


def test_three_rounds_of_expiry_with_twenty_callers_each_never_see_a_401_nor_a_reused_refresh_token(refresh_stack):
    with Agent(refresh_stack.bff_url, record=False) as agent:
        agent.adapters["http://"].init_poolmanager(connections=32, maxsize=32)
        agent.login("rounds")
        spent_before = len(refresh_stack.issued.spent_refresh_tokens())
        for _ in range(3):
            wait_until_expired(refresh_stack.issued.latest()["access_token"])
            assert call_api_concurrently(agent, 20) == [200] * 20
        assert_each_refresh_token_spent_once(refresh_stack.issued.spent_refresh_tokens()[spent_before:], expiries=3)
        assert agent.user().status_code == 200


def test_a_refresh_the_idp_refuses_ends_the_session_with_session_expired(stack, refresh_stack):
    with Agent(refresh_stack.bff_url, record=False) as agent:
        agent.login("refused")
        tokens = refresh_stack.issued.latest()
        # The grant dies at the IdP behind the BFF's back (an admin revoked it).
        revoked = agent.post(
            f"{refresh_stack.issuer}/token/revocation",
            data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
            auth=BASIC_AUTH,
        )
        assert revoked.status_code == 200
        wait_until_expired(tokens["access_token"])
        response = agent.get(f"{refresh_stack.bff_url}/api/echo/data", headers={"X-CSRF": "1"})
        assert response.status_code == 401
        assert response.json()["error"] == "session_expired"
        assert agent.user().status_code == 401  # the whole session ended, not just this call
