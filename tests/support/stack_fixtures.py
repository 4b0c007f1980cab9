"""Real components for integration and browser tests: one redis-server, the dev IdP, the sample
API and the BFF under gunicorn, each on a free port, started once per test session."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import redis
import requests
from joserfc.jwk import RSAKey

from app.keyspace import SessionRef, record_key
from dev.agent import Agent
from dev.stack import (
    BASIC_AUTH,
    REPORTS_AUDIENCE,
    IssuedTokens,
    Service,
    bff_env,
    free_cluster_port,
    free_port,
    start_bff,
    start_echo,
    start_idp,
    start_redis,
    start_redis_cluster,
    start_redis_sentinel,
)
from support.capture import CaptureUpstream
from support.leak_check import find_leaks

API_MAX_BODY = 1024 * 1024
AUTHZ_SECRET = "test-authz-secret-0123456789abcdefghijklmnop"  # what nginx would send to /bff/authz


@dataclass
class Stack:
    issuer: str
    redis_url: str
    bff_url: str
    bff_hint_url: str
    bff_log: Path
    tokens_file: Path
    redis: redis.Redis
    signing_key: RSAKey
    echo_url: str
    spare_port: int
    jwt_port: int  # where the dev IdP fetches its private_key_jwt client's keys (/bff/jwks)
    reports_url: str  # the sample API for the second resource (REPORTS_AUDIENCE)
    capture: CaptureUpstream
    hold_dir: Path
    tls_ports: tuple[int, int]  # registered at the IdP as https://localhost:<port>, for tls_fixtures

    @property
    def issued(self) -> IssuedTokens:
        return IssuedTokens(self.tokens_file)

    def issued_tokens(self) -> set[str]:
        """Every access, refresh and id token the IdP has issued so far in this run."""
        return IssuedTokens(self.tokens_file).all()

    def idp_token_request(self, **form: str) -> requests.Response:
        """Call the IdP's token endpoint as the BFF's client would, e.g. to try a refresh token."""
        return requests.post(f"{self.issuer}/token", data=form, auth=BASIC_AUTH, timeout=5)

    def latest_tokens(self) -> dict[str, str]:
        """The most recent token response the IdP sent (to whichever BFF asked)."""
        return IssuedTokens(self.tokens_file).latest()

    def session_keys(self) -> list[bytes]:
        return sorted(self.redis.scan_iter(match="bff:{*}:s:*"))  # a SCAN is fine in tests, never in the app

    def has_session(self, cookie: str) -> bool:
        return bool(self.redis.exists(record_key(SessionRef.from_session_id(cookie))))

    def expire_access_token(self, cookie: str) -> None:
        """Mark the session's access token as expired, so its next API call refreshes first."""
        key = record_key(SessionRef.from_session_id(cookie))
        record = msgspec.msgpack.decode(self.redis.get(key))
        record["access_expires_at"] = 1
        self.redis.set(key, msgspec.msgpack.encode(record), keepttl=True)

    @contextmanager
    def refresh_held_at_the_idp(self) -> Iterator[None]:
        """While inside, the IdP issues a refresh's tokens but holds its answer back; leaving
        releases it. `wait_until_refresh_held` tells when a refresh has reached that point."""
        hold = self.hold_dir / "hold"
        hold.touch()
        try:
            yield
        finally:
            hold.unlink()

    def wait_until_refresh_held(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not (self.hold_dir / "held").exists():
            assert time.monotonic() < deadline, "no refresh reached the IdP"
            time.sleep(0.01)

    def snapshot(self) -> dict[bytes, bytes]:
        """Every key in Redis with its value: 'bad input changes nothing' compares two of these."""
        return {key: self.redis.dump(key) for key in self.redis.scan_iter()}


@pytest.fixture(scope="session")
def stack(workdir):
    names = (
        "redis",
        "idp",
        "bff",
        "bff_hint",
        "bff_spare",
        "bff_jwt",
        "echo",
        "reports",
        "closed",
        "tls",
        "tls_python",
    )
    ports = {name: free_port() for name in names}
    issuer = f"http://127.0.0.1:{ports['idp']}/realms/test"
    bff_url = f"http://localhost:{ports['bff']}"
    bff_hint_url = f"http://localhost:{ports['bff_hint']}"
    spare_url = f"http://localhost:{ports['bff_spare']}"  # registered at the IdP for tests' own BFFs
    jwt_url = f"http://localhost:{ports['bff_jwt']}"  # for tests' BFFs of the private_key_jwt client
    redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
    tokens_file = workdir / "issued-tokens.jsonl"
    # The IdP signs with a key the tests hold too, so they can forge tokens it would accept.
    signing_key = RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "use": "sig", "alg": "RS256"})
    jwks_file = workdir / "idp-jwks.json"
    jwks_file.write_text(json.dumps({"keys": [signing_key.as_dict(private=True)]}))
    hold_dir = workdir / "idp-hold"
    hold_dir.mkdir()
    services = [start_redis(ports["redis"], workdir)]
    capture = CaptureUpstream()
    try:
        services.append(
            start_idp(
                ports["idp"],
                issuer,
                workdir,
                [
                    bff_url,
                    bff_hint_url,
                    spare_url,
                    jwt_url,
                    *(f"https://localhost:{ports[n]}" for n in ("tls", "tls_python")),
                ],
                IDP_ISSUED_TOKENS_FILE=str(tokens_file),
                IDP_JWKS_FILE=str(jwks_file),
                IDP_HOLD_DIR=str(hold_dir),
                # That client's keys: what a test's BFF on that port publishes at /bff/jwks.
                IDP_JWT_CLIENT_JWKS_URI=f"{jwt_url}/bff/jwks",
            )
        )
        services.append(start_echo(ports["echo"], issuer, workdir))
        echo_url = f"http://127.0.0.1:{ports['echo']}"
        services.append(start_echo(ports["reports"], issuer, workdir, audience=REPORTS_AUDIENCE))
        reports_url = f"http://127.0.0.1:{ports['reports']}"
        upstreams = {
            "echo": echo_url,
            "echo-base": f"{echo_url}/base/path",
            "closed": f"http://127.0.0.1:{ports['closed']}",
            "cap": f"{capture.url}/base",
            "cap-tenant": {"url": f"{capture.url}/tenant", "forward_headers": ["X-Tenant"]},
            # DESIGN §10's token policies (test_token_policies.py)
            "cap-public": {"url": f"{capture.url}/public-api", "token": "none"},
            "cap-maybe": {"url": f"{capture.url}/maybe", "token": "user_or_none"},
        }
        env = bff_env(
            bff_url,
            issuer,
            redis_url,
            BFF_API_UPSTREAMS=json.dumps(upstreams),
            BFF_API_TIMEOUT="2",
            BFF_API_MAX_BODY=str(API_MAX_BODY),
            BFF_AUTHZ_SECRET=AUTHZ_SECRET,
        )
        services.append(start_bff(ports["bff"], env, workdir / "bff.log"))
        hint_env = bff_env(bff_hint_url, issuer, redis_url, BFF_LOGOUT_MODE="id_token_hint")
        services.append(start_bff(ports["bff_hint"], hint_env, workdir / "bff-hint.log", workers=1))
        client = redis.Redis.from_url(redis_url)
        yield Stack(
            issuer,
            redis_url,
            bff_url,
            bff_hint_url,
            workdir / "bff.log",
            tokens_file,
            client,
            signing_key,
            echo_url,
            ports["bff_spare"],
            ports["bff_jwt"],
            reports_url,
            capture,
            hold_dir,
            (ports["tls"], ports["tls_python"]),
        )
        client.close()
        # Once every test of this process is done: its whole traffic, checked (an error here
        # fails the run, reported at the teardown of the process's last test).
        findings = find_leaks(IssuedTokens(tokens_file).all(), workdir)
        assert not findings.leaks, f"I1 broken in this run: {findings.leaks}"
    finally:
        capture.stop()
        for service in reversed(services):
            service.stop()


TOPOLOGIES = ("single", "sentinel", "cluster")


class RedisTopologies:
    """Redis in each topology the BFF supports, each started on first use: the stack's own server,
    a Sentinel set (master, replica, sentinel) and a 3-master Cluster."""

    def __init__(self, single_url: str, workdir: Path) -> None:
        self.urls = {"single": single_url}
        self.workdir = workdir
        self.services: list[Service] = []

    def url(self, kind: str) -> str:
        if kind not in self.urls:
            if kind == "sentinel":
                master, replica, sentinel = free_port(), free_port(), free_port()
                self.services += start_redis_sentinel(master, replica, sentinel, self.workdir)
                self.urls[kind] = f"redis+sentinel://127.0.0.1:{sentinel}/mymaster/0"
            else:
                ports = [free_cluster_port() for _ in range(3)]
                self.services += start_redis_cluster(ports, self.workdir)
                self.urls[kind] = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
        return self.urls[kind]

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


@pytest.fixture(scope="session")
def redis_topologies(stack, workdir):
    """Shared by every test that runs on all topologies (the store's contract, the core flows)."""
    topologies = RedisTopologies(stack.redis_url, workdir)
    yield topologies
    topologies.stop()


@dataclass
class OwnBff:
    url: str  # as browsers and the IdP know it: http://localhost:<port>
    direct: str  # http://127.0.0.1:<port>
    port: int
    service: Service


@pytest.fixture
def make_bff(stack, workdir):
    """A BFF of a test's own (its own settings, counters or lifecycle), from `bff_env` plus
    `overrides` (BFF_* variables), against the stack's IdP and Redis unless told otherwise;
    stopped after the test."""
    started: list[Service] = []

    def make(
        *,
        issuer: str | None = None,
        redis_url: str | None = None,
        workers: int = 1,
        registered: bool = False,
        port: int | None = None,
        **overrides: str,
    ) -> OwnBff:
        """`registered`: on the port whose URLs the stack's IdP knows, for tests that sign in;
        `port`: a port of the test's choosing (for an IdP of its own that must know the URL)."""
        port = port or (stack.spare_port if registered else free_port())
        url = f"http://localhost:{port}"
        env = bff_env(url, issuer or stack.issuer, redis_url or stack.redis_url, **overrides)
        service = start_bff(port, env, workdir / f"bff-own-{port}.log", workers=workers)
        started.append(service)
        return OwnBff(url, f"http://127.0.0.1:{port}", port, service)

    yield make
    for service in reversed(started):
        service.stop(signal.SIGQUIT)  # gunicorn's quick shutdown: the test is over, nothing to drain


@pytest.fixture
def agent(stack):
    with Agent(stack.bff_url) as a:
        yield a


@pytest.fixture
def make_agent(stack):
    agents = []

    def make(bff_url: str | None = None, user_agent: str = "pytest-agent", record: bool = True) -> Agent:
        a = Agent(bff_url or stack.bff_url, user_agent, record)
        agents.append(a)
        return a

    yield make
    for a in agents:
        a.close()


@pytest.fixture
def signed_in(make_agent):
    """A browser with a live session as alice."""
    a = make_agent()
    a.login("alice")
    return a
