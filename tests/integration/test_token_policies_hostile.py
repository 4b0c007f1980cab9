"""Issue 14 under attack (DESIGN §8, §10): a red team's findings against the first version of the
token policies, client tokens, per-API tokens and PAR, each failing there and passing now, and
what held. A hostile or odd IdP (FakeIdp) plays the answers the dev IdP never gives."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc.jwk import RSAKey

from dev.stack import API_AUDIENCE, CLIENT_ID, JWT_CLIENT_ID, REPORTS_AUDIENCE

CSRF = {"X-CSRF": "1"}


def call(agent_or_session, base: str, name: str, path: str = "x"):
    return agent_or_session.get(f"{base}/api/{name}/{path}", headers=CSRF, timeout=10)


# F1 ------------------------------------------------------------------------------------------
def test_a_refused_per_api_token_does_not_spend_the_sessions_refresh_token(stack, make_bff, make_agent):
    """An upstream with a new `resource` is added (a deploy); sessions signed in before it did not
    name that resource. oidc-provider consumes (rotates) the presented refresh token BEFORE it
    checks the resource, then answers invalid_target. refresh.py treats that as "this API only:
    the session stays", keeps the now-spent refresh token, and presents it again at the next
    refresh: the IdP sees a reuse, revokes the grant, and the session dies."""
    before = make_bff(
        registered=True,
        BFF_API_UPSTREAMS=json.dumps({"echo": stack.echo_url}),
        BFF_OIDC_RESOURCE=API_AUDIENCE,
    )
    agent = make_agent(before.url)
    agent.login("tara")
    assert call(agent, before.url, "echo").status_code == 200
    before.service.stop()
    after = make_bff(
        registered=True,
        BFF_API_UPSTREAMS=json.dumps(
            {"echo": stack.echo_url, "reports": {"url": stack.reports_url, "resource": REPORTS_AUDIENCE}}
        ),
        BFF_OIDC_RESOURCE=API_AUDIENCE,
    )
    before_refreshes = len(stack.issued.spent_refresh_tokens())
    refused = call(agent, after.url, "reports")
    # Fixed: the session did not ask for that resource, so the IdP is not asked (it would spend
    # the refresh token while refusing): the user is told to sign in again; the session stays.
    assert (refused.status_code, refused.json()["error"]) == (401, "signin_required")
    assert len(stack.issued.spent_refresh_tokens()) == before_refreshes
    stack.expire_access_token(agent.session_cookie)
    echo = call(agent, after.url, "echo", "again")
    spent = stack.issued.spent_refresh_tokens()
    assert echo.status_code == 200, echo.text  # was: 401 session_expired
    assert len(spent) == len(set(spent))
    agent.login("tara")  # signing in again asks for both resources
    again = call(agent, after.url, "reports")
    assert again.status_code == 200 and again.json()["aud"] == REPORTS_AUDIENCE, again.text


# F2 ------------------------------------------------------------------------------------------
def test_two_bffs_sharing_redis_never_share_a_client_credentials_token(stack, make_bff, make_agent):
    """The client-token key is built from the upstream name, resource and scope only: no issuer,
    no client id. A second BFF on the same Redis (another client, another IdP, a blue/green
    migration to private_key_jwt: the test stack itself runs several BFFs on one Redis) with an
    upstream of the same name gets the first BFF's token, and its API sees the wrong client."""
    name = f"jobs-{secrets.token_hex(4)}"
    upstreams = json.dumps({name: {"url": stack.reports_url, "token": "client", "resource": REPORTS_AUDIENCE}})
    first = make_bff(BFF_API_UPSTREAMS=upstreams)
    assert call(requests, first.url, name).json()["client_id"] == CLIENT_ID
    key = RSAKey.generate_key(2048, parameters={"kid": "red14-jwt"})
    second = make_bff(
        port=stack.jwt_port,
        BFF_OIDC_CLIENT_ID=JWT_CLIENT_ID,
        BFF_OIDC_CLIENT_SECRET="",
        BFF_OIDC_CLIENT_KEY=json.dumps({"keys": [key.as_dict(private=True)]}),
        BFF_API_UPSTREAMS=upstreams,
    )
    body = call(requests, second.url, name).json()
    assert body["client_id"] == JWT_CLIENT_ID, f"second BFF used the first BFF's token: {body}"


# A hostile / odd IdP for the answers the dev IdP never gives --------------------------------


class FakeIdp:
    """Metadata (with PAR), an empty JWKS, a token and a PAR endpoint whose answers a test sets;
    every request counted by path."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.token_reply = (200, b'{"access_token": "cc-token", "token_type": "Bearer", "expires_in": 300}')
        self.par_reply = (201, b'{"request_uri": "urn:ietf:params:oauth:request_uri:x", "expires_in": 60}')
        self.delay = 0.0
        self.lock = threading.Lock()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                idp.count(self.path)
                if self.path.endswith("/.well-known/openid-configuration"):
                    self._send(200, json.dumps(idp.metadata()).encode())
                else:
                    self._send(200, b'{"keys": []}')

            def do_POST(self):
                idp.count(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if idp.delay:
                    time.sleep(idp.delay)
                self._send(*(idp.par_reply if self.path.endswith("/par") else idp.token_reply))

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self.server.server_port}/fake"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, path: str) -> None:
        with self.lock:
            key = path.split("?")[0].rsplit("/", 1)[-1]
            self.counts[key] = self.counts.get(key, 0) + 1

    def metadata(self) -> dict:
        i = self.issuer
        return {
            "issuer": i,
            "authorization_endpoint": f"{i}/auth",
            "token_endpoint": f"{i}/token",
            "jwks_uri": f"{i}/jwks",
            "pushed_authorization_request_endpoint": f"{i}/par",
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_idp():
    idp = FakeIdp()
    yield idp
    idp.stop()


def client_bff(stack, make_bff, fake_idp, **extra):
    name = f"cc-{secrets.token_hex(4)}"
    upstreams = {name: {"url": f"{stack.capture.url}/cc", "token": "client"}}
    return name, make_bff(issuer=fake_idp.issuer, BFF_API_UPSTREAMS=json.dumps(upstreams), **extra)


# F3 ------------------------------------------------------------------------------------------
ODD_LIFETIMES = ["0", "1", "-60", "1e400", "Infinity", "100000000000000000000"]


def test_odd_expires_in_from_the_idp_neither_breaks_nor_defeats_the_client_token_cache(stack, make_bff, fake_idp):
    """10 anonymous calls to a `client` upstream: at most 2 token requests and no 500s, whatever
    `expires_in` the IdP answers (client_tokens._cache_seconds / the SET's `ex`). One upstream
    per value, each its own cache key, on one BFF."""
    names = {odd: f"cc-{i}-{secrets.token_hex(4)}" for i, odd in enumerate(ODD_LIFETIMES)}
    upstreams = {name: {"url": f"{stack.capture.url}/cc", "token": "client"} for name in names.values()}
    bff = make_bff(issuer=fake_idp.issuer, BFF_API_UPSTREAMS=json.dumps(upstreams))
    for odd, name in names.items():
        fake_idp.token_reply = (
            200,
            b'{"access_token": "cc-token", "token_type": "Bearer", "expires_in": %s}' % odd.encode(),
        )
        before = fake_idp.counts.get("token", 0)
        statuses = [call(requests, bff.url, name).status_code for _ in range(10)]
        token_requests = fake_idp.counts.get("token", 0) - before
        assert set(statuses) == {200} and token_requests <= 2, (odd, statuses, token_requests)


# F5 ------------------------------------------------------------------------------------------
def _aud(authorization: str) -> object:
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["aud"]


def test_an_upstream_for_the_sign_in_resource_with_a_scope_gets_a_token_for_that_resource(stack, make_bff, make_agent):
    """api_access.api_token drops `resource` when it equals BFF_OIDC_RESOURCE and a scope is set;
    the refresh then names only the scope and the IdP picks the audience: here the reports
    upstream receives a token for the echo API (another API's token, misdirected)."""
    upstreams = {
        "echo": {"url": stack.echo_url, "resource": API_AUDIENCE},
        "reports-profile": {"url": f"{stack.capture.url}/rp", "resource": REPORTS_AUDIENCE, "scope": "profile"},
    }
    bff = make_bff(registered=True, BFF_API_UPSTREAMS=json.dumps(upstreams), BFF_OIDC_RESOURCE=REPORTS_AUDIENCE)
    agent = make_agent(bff.url)
    agent.login("remy")
    stack.capture.clear()
    assert call(agent, bff.url, "reports-profile").status_code == 200
    (seen,) = stack.capture.seen
    assert _aud(seen.header("Authorization")) == REPORTS_AUDIENCE


# F4 ------------------------------------------------------------------------------------------
# (That every anonymous /bff/login is one PAR request is cut at nginx: test_nginx_hostile.py,
# test_a_flood_of_anonymous_sign_in_starts_is_cut_at_nginx_before_it_reaches_the_idp.)


@pytest.mark.parametrize("reply", [(503, b"{}"), (429, b'{"error": "slow_down"}')], ids=["503", "429"])
def test_a_failing_par_endpoint_is_backed_off_like_metadata(stack, make_bff, fake_idp, reply):
    """DESIGN section 8: "back off failed fetches". A PAR endpoint that fails (or says 429) is asked
    again on every anonymous /bff/login, each one with the client's credentials."""
    bff = make_bff(issuer=fake_idp.issuer)
    requests.get(f"{bff.url}/readyz", timeout=10)  # metadata loaded
    fake_idp.par_reply = reply
    answers = [requests.get(f"{bff.url}/bff/login", allow_redirects=False, timeout=10) for _ in range(20)]
    pushed = fake_idp.counts.get("par", 0)
    assert pushed <= 2 and {a.status_code for a in answers} == {502}


def test_a_slow_par_endpoint_does_not_let_anonymous_sign_ins_starve_every_other_request(stack, make_bff, fake_idp):
    """The IdP hanging at its PAR endpoint: each anonymous login holds a gunicorn thread for the
    whole IdP timeout (no circuit breaker, no concurrency cap), so 16 logins (2 x BFF_THREADS)
    make even /healthz wait: signed-in users' /api calls starve the same way."""
    bff = make_bff(issuer=fake_idp.issuer, BFF_IDP_TIMEOUT="1.5")
    requests.get(f"{bff.url}/readyz", timeout=10)
    fake_idp.delay = 10
    pool = ThreadPoolExecutor(16)
    futures = [pool.submit(requests.get, f"{bff.url}/bff/login", allow_redirects=False, timeout=30) for _ in range(16)]
    time.sleep(0.5)
    started = time.monotonic()
    requests.get(f"{bff.url}/healthz", timeout=30)
    waited = time.monotonic() - started
    statuses = {f.result().status_code for f in futures}
    pool.shutdown()
    assert waited < 1
    assert statuses <= {502, 503}  # 503 idp_busy beyond the PAR slots, 502 once the IdP timed out


def _commands(redis_client) -> int:
    return sum(v["calls"] for v in redis_client.info("commandstats").values())


def test_a_hanging_token_endpoint_does_not_make_anonymous_waiters_poll_redis_hundreds_of_times(
    stack, make_bff, fake_idp
):
    """client_tokens.token: while one worker waits on the IdP, every other caller of a `client`
    upstream polls Redis (MGET + SET NX) every 20 ms until the holder gives up."""
    name, bff = client_bff(stack, make_bff, fake_idp, BFF_IDP_TIMEOUT="2")
    requests.get(f"{bff.url}/readyz", timeout=10)
    fake_idp.delay = 10
    before = _commands(stack.redis)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call(requests, bff.url, name), range(8)))
    spent = _commands(stack.redis) - before
    assert spent < 8 * 20 and {a.status_code for a in answers} <= {502, 503}


# Held (expected to pass) ---------------------------------------------------------------------
def _two_resource_bff(stack, make_bff, workers=1):
    upstreams = {"echo": stack.echo_url, "reports": {"url": stack.reports_url, "resource": REPORTS_AUDIENCE}}
    return make_bff(
        registered=True, workers=workers, BFF_API_UPSTREAMS=json.dumps(upstreams), BFF_OIDC_RESOURCE=API_AUDIENCE
    )


def test_held_a_logout_during_a_per_api_refresh_revokes_the_refresh_token_it_returns(stack, make_bff, make_agent):
    bff = _two_resource_bff(stack, make_bff)
    agent = make_agent(bff.url)
    agent.login("lola")
    with ThreadPoolExecutor(1) as pool, stack.refresh_held_at_the_idp():
        pending = pool.submit(call, agent, bff.url, "reports")
        stack.wait_until_refresh_held()
        assert agent.logout().status_code == 200
    answer = pending.result()
    assert answer.status_code == 401
    issued = [
        r for r in stack.issued.responses() if r["grant_type"] == "refresh_token" and r["resource"] == REPORTS_AUDIENCE
    ]
    late = issued[-1]["refresh_token"]
    assert stack.idp_token_request(grant_type="refresh_token", refresh_token=late).json()["error"] == "invalid_grant"


def test_held_concurrent_sign_in_and_per_api_refreshes_over_two_workers_never_reuse_a_refresh_token(
    stack, make_bff, make_agent
):
    bff = _two_resource_bff(stack, make_bff, workers=2)
    agent = make_agent(bff.url)
    agent.login("cora")
    stack.expire_access_token(agent.session_cookie)
    cookie = {"bff": agent.session_cookie}
    barrier = threading.Barrier(12)

    def one(i):
        barrier.wait()
        return requests.get(
            f"{bff.url}/api/{'echo' if i % 2 else 'reports'}/c{i}", headers=CSRF, cookies=cookie, timeout=30
        )

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(12)))
    assert [a.status_code for a in answers] == [200] * 12
    spent = stack.issued.spent_refresh_tokens()
    assert len(spent) == len(set(spent))


@pytest.mark.parametrize(
    "target",
    [
        "/api/cap%2Dpublic/x",
        "/api/CAP-public/x",
        "/api/cap-public/..%2Fcap/x",
        "/api/cap-public/%2e%2e/x",
        "/api/cap-public//x",
        "/api/cap-maybe/%2E%2E/base/x",
        "//api/cap-maybe/x",
        "/api/cap-public/x%00",
        "/api/./cap/x",
    ],
)
def test_held_encoded_or_odd_paths_never_reach_an_upstream_with_a_token(stack, signed_in, target):
    stack.capture.clear()
    host = stack.bff_url.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", target, headers={"X-CSRF": "1", "Cookie": f"bff={signed_in.session_cookie}"})
    status = conn.getresponse().status
    conn.close()
    authz = signed_in.get(
        f"{stack.bff_url}/bff/authz",
        headers={
            "X-CSRF": "1",
            "X-BFF-Authz-Secret": "test-authz-secret-0123456789abcdefghijklmnop",
            "X-Original-URI": target,
        },
    )
    seen = [s for s in stack.capture.seen if s.header("Authorization")]
    assert status >= 400 and authz.status_code >= 400 and not seen, (status, authz.status_code, seen)


def test_held_an_odd_request_uri_stays_one_encoded_parameter(stack, make_bff, fake_idp):
    odd = 'urn:x&client_id=evil&redirect_uri=https://evil/#frag"<>\r\nSet-Cookie: a=b'
    fake_idp.par_reply = (200, json.dumps({"request_uri": odd}).encode())
    bff = make_bff(issuer=fake_idp.issuer)
    start = requests.get(f"{bff.url}/bff/login", allow_redirects=False, timeout=10)
    assert start.status_code == 302
    location = start.headers["Location"]
    assert location.startswith(fake_idp.issuer + "/auth?") and "\n" not in location and "#" not in location
    query = parse_qs(urlsplit(location).query)
    assert query == {"client_id": [CLIENT_ID], "request_uri": [odd]}
    assert "a" not in start.cookies


# Second red team (after the fixes above) -------------------------------------------------------
def _login(url: str, **params) -> requests.Response:
    return requests.get(f"{url}/bff/login", params=params, allow_redirects=False, timeout=10)


def test_an_unsupported_prompt_from_one_browser_does_not_deny_sign_ins_to_everyone(stack, make_bff):
    """?prompt=select_account is accepted by login.PROMPT_VALUES; the dev IdP (oidc-provider,
    prompt_values_supported: none login consent) refuses that PAR with 400 invalid_request.
    Counted as an IdP failure, it backed the PAR endpoint off for everyone in the process: the
    next, ordinary sign-in starts answered 502."""
    bff = make_bff(registered=True)
    assert _login(bff.url).status_code == 302  # PAR works
    hostile = _login(bff.url, prompt="select_account")
    assert hostile.status_code in (400, 502), hostile.text
    victims = [_login(bff.url).status_code for _ in range(3)]
    assert victims == [302, 302, 302], f"one hostile request denied sign-ins: {victims}"


def test_a_superscript_expires_in_neither_crashes_nor_defeats_the_client_token_cache(stack, make_bff, fake_idp):
    """token_lifetime: "²".isdigit() is True but int("²") raises: every call was a 500 and a
    fresh token request."""
    name = f"cc-{secrets.token_hex(4)}"
    upstreams = {name: {"url": f"{stack.capture.url}/cc", "token": "client"}}
    bff = make_bff(issuer=fake_idp.issuer, BFF_API_UPSTREAMS=json.dumps(upstreams))
    reply = {"access_token": "cc-token", "token_type": "Bearer", "expires_in": "\u00b2"}
    fake_idp.token_reply = (200, json.dumps(reply).encode())
    statuses = [requests.get(f"{bff.url}/api/{name}/x", headers=CSRF, timeout=10).status_code for _ in range(10)]
    assert set(statuses) == {200} and fake_idp.counts.get("token", 0) <= 2, (statuses, fake_idp.counts)
