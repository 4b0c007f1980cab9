"""The core flows on every Redis topology the BFF supports: one server, Sentinel, Cluster.

Each topology gets a BFF (2 workers) using it through BFF_REDIS_URL; the Redis processes
(`redis_topologies`), the IdP and the sample API are shared with the rest of the run."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from support.stack_fixtures import TOPOLOGIES

from app.keyspace import SessionRef, record_key
from app.redis_client import make_redis, parse_redis_url
from dev import forge
from dev.agent import Agent
from dev.forms import is_login_form
from dev.stack import bff_env, free_port, start_bff, start_redis_sentinel

# One process runs these (make test: --dist loadgroup), so that the Sentinel set and the
# Cluster start once per run rather than once per process.
pytestmark = pytest.mark.xdist_group("redis-topologies")


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topology(request, stack, workdir, redis_topologies):
    redis_url = redis_topologies.url(request.param)
    bff_url = f"http://localhost:{stack.spare_port}"
    env = bff_env(bff_url, stack.issuer, redis_url, BFF_API_UPSTREAMS=json.dumps({"echo": stack.echo_url}))
    bff = start_bff(stack.spare_port, env, workdir / f"bff-{request.param}.log")
    yield request.param, bff_url, redis_url
    bff.stop()


def test_sign_in_use_the_api_and_sign_out_of_app_and_idp(stack, topology):
    _, bff_url, redis_url = topology
    with Agent(bff_url, record=False) as agent:
        agent.login("topo")
        # Stored in this topology (Flask-Session's Redis backend would have swapped a cluster
        # client for a localhost one; ours stores through the client it is given).
        assert make_redis(parse_redis_url(redis_url), 1.0).exists(
            record_key(SessionRef.from_session_id(agent.session_cookie))
        )
        refresh_token = stack.latest_tokens()["refresh_token"]
        assert agent.user().json()["sub"] == "topo"
        assert agent.get(f"{bff_url}/api/echo/x", headers={"X-CSRF": "1"}).json()["sub"] == "topo"
        logout_url = agent.logout().json()["logout_url"]
        assert agent.user().status_code == 401
        refused = stack.idp_token_request(grant_type="refresh_token", refresh_token=refresh_token)
        assert refused.status_code == 400
        assert set(parse_qs(urlsplit(logout_url).query)) == {"client_id", "post_logout_redirect_uri", "state"}
        agent.follow_logout_url(logout_url)
        assert is_login_form(agent.start_login().text)


def test_back_channel_logout_ends_the_sessions_of_that_idp_session(stack, topology):
    _, bff_url, _ = topology
    with Agent(bff_url, record=False) as first, Agent(bff_url, record=False) as second:
        first.login("topo-bc")
        second.login("topo-bc")
        sid = first.user().json()["claims"]["sid"]
        token = forge.logout_token(stack.signing_key, issuer=stack.issuer, sid=sid)
        assert first.post(f"{bff_url}/bff/backchannel-logout", data={"logout_token": token}).status_code == 200
        assert first.user().status_code == 401
        assert second.user().status_code == 200


@pytest.fixture
def sentinel_bff(stack, workdir):
    """A Sentinel set of its own, since the failover test promotes the replica."""
    master, replica, sentinel = free_port(), free_port(), free_port()
    services = start_redis_sentinel(master, replica, sentinel, workdir)
    bff_url = f"http://localhost:{stack.spare_port}"
    env = bff_env(bff_url, stack.issuer, f"redis+sentinel://127.0.0.1:{sentinel}/mymaster")
    try:
        services.append(start_bff(stack.spare_port, env, workdir / "bff-failover.log"))
        yield bff_url, sentinel
    finally:
        for service in reversed(services):
            service.stop()


def test_a_sentinel_failover_keeps_existing_sessions(sentinel_bff):
    bff_url, sentinel_port = sentinel_bff
    sentinel = redis.Redis(port=sentinel_port)
    with Agent(bff_url, record=False) as agent:
        agent.login("failover")
        old = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
        assert redis.Redis(port=int(old[1])).wait(1, 5000) == 1  # the replica has the session too
        sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
        deadline = time.monotonic() + 20
        while sentinel.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster") == old:
            assert time.monotonic() < deadline, "Sentinel did not promote the replica"
            time.sleep(0.1)
        assert agent.user().json()["sub"] == "failover"  # served by the new master
        agent.logout()
        assert agent.user().status_code == 401
