"""IdP metadata and JWKS during an IdP outage: the last good copy, backoff, one fetch.

A real HTTP server on 127.0.0.1 plays the IdP and is switched between answering, failing (500),
hanging and refusing connections (stopped); a real `Provider` talks to it, and the server counts
the requests that reach it. Timeouts, TTLs and backoffs are shrunk so that each test is quick.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from joserfc.jwk import RSAKey

from app.errors import IdpUnavailable
from app.idp_cache import CachedDocument
from app.oidc import Provider

TIMEOUT = 0.3  # the provider's network timeout, and how long callers wait for another's fetch
KEY = RSAKey.generate_key(2048, parameters={"kid": "k-1", "use": "sig", "alg": "RS256"})
DISCOVERY = "/realms/test/.well-known/openid-configuration"
JWKS = "/realms/test/jwks"


class FakeIdp:
    """A discovery document and a JWKS over real HTTP; `mode` is "ok", "500" or "hang"."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.version = 1  # shows in the metadata, so a test can tell a refetched copy from the old one
        self.requests: Counter[str] = Counter()
        self.released = threading.Event()  # ends every hang at teardown
        self._server = self._serve(0)
        self.port = self._server.server_port
        self.issuer = f"http://127.0.0.1:{self.port}/realms/test"

    def _serve(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.idp = self  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server

    def refuse(self) -> None:
        """Stop listening: connections are refused, and nothing is counted."""
        self._server.shutdown()
        self._server.server_close()

    def listen(self) -> None:
        self._server = self._serve(self.port)

    def close(self) -> None:
        self.released.set()
        self.refuse()

    def document(self, path: str) -> dict | None:
        if path == DISCOVERY:
            return {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/auth",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"http://127.0.0.1:{self.port}{JWKS}",
                "end_session_endpoint": f"{self.issuer}/logout/v{self.version}",
            }
        if path == JWKS:
            return {"keys": [KEY.as_dict()]}
        return None


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        idp: FakeIdp = self.server.idp  # type: ignore[attr-defined]
        idp.requests[self.path] += 1
        if idp.mode == "hang":
            idp.released.wait(1.0)  # well past TIMEOUT: the client has given up by then
        document = idp.document(self.path)
        status = 500 if idp.mode == "500" or document is None else 200
        body = json.dumps(document).encode() if status == 200 else b"Internal Server Error"
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client timed out and left

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def idp():
    server = FakeIdp()
    yield server
    server.close()


def provider_for(idp: FakeIdp, **tuning) -> Provider:
    return Provider(
        issuer=idp.issuer,
        client_id="spa",
        client_secret="client-secret-that-is-at-least-32-bytes-long",
        scopes="openid",
        redirect_uri="http://app/callback",
        timeout=TIMEOUT,
        revocation_timeout=TIMEOUT,
        **tuning,
    )


def timed(call):
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except IdpUnavailable as error:
        return error, time.monotonic() - started


def test_metadata_is_refetched_after_its_ttl_while_the_idp_answers(idp):
    provider = provider_for(idp, metadata_ttl=0.1)
    assert provider.metadata.end_session_endpoint.endswith("/v1")
    idp.version = 2
    assert provider.metadata.end_session_endpoint.endswith("/v1")  # cached
    time.sleep(0.15)
    assert provider.metadata.end_session_endpoint.endswith("/v2")
    assert idp.requests[DISCOVERY] == 2


@pytest.mark.parametrize("outage", ["500", "hang", "refused"])
def test_metadata_refetch_failure_serves_the_last_good_copy(idp, outage):
    provider = provider_for(idp, metadata_ttl=0.1)
    good = provider.metadata
    time.sleep(0.15)
    if outage == "refused":
        idp.refuse()
    else:
        idp.mode = outage
    served, elapsed = timed(lambda: provider.metadata)
    assert served is good
    assert elapsed < TIMEOUT + 0.5  # a hang costs this one caller one timeout, no more
    if outage != "refused":
        assert idp.requests[DISCOVERY] == 2  # the refetch was tried


def test_while_a_refetch_hangs_other_callers_get_the_last_good_copy_at_once(idp):
    provider = provider_for(idp, metadata_ttl=0.1)
    good = provider.metadata
    time.sleep(0.15)
    idp.mode = "hang"
    refetching = threading.Thread(target=lambda: timed(lambda: provider.metadata))
    refetching.start()
    while idp.requests[DISCOVERY] < 2:  # the refetch is now waiting on the IdP
        time.sleep(0.005)
    served, elapsed = timed(lambda: provider.metadata)
    refetching.join()
    assert served is good
    assert elapsed < 0.1  # neither a lock held across the network call nor a second fetch
    assert idp.requests[DISCOVERY] == 2


def test_no_request_reaches_the_idp_while_a_failed_refetch_backs_off(idp):
    provider = provider_for(idp, metadata_ttl=0.1, backoff_initial=10)
    good = provider.metadata
    time.sleep(0.15)
    idp.mode = "500"
    assert provider.metadata is good  # this refetch fails: back off
    for _ in range(5):
        assert provider.metadata is good
    assert idp.requests[DISCOVERY] == 2


def test_a_cold_start_with_the_idp_down_fails_at_once_and_the_next_call_sends_nothing(idp):
    idp.refuse()
    provider = provider_for(idp, backoff_initial=10)
    with pytest.raises(IdpUnavailable):
        provider.metadata  # noqa: B018
    idp.listen()
    failed, elapsed = timed(lambda: provider.metadata)
    assert isinstance(failed, IdpUnavailable)
    assert elapsed < 0.1  # no connection attempted
    assert idp.requests[DISCOVERY] == 0


def test_after_the_backoff_the_next_call_fetches_again_and_recovers(idp):
    idp.mode = "500"
    provider = provider_for(idp, backoff_initial=0.2)
    with pytest.raises(IdpUnavailable):
        provider.metadata  # noqa: B018
    idp.mode = "ok"
    with pytest.raises(IdpUnavailable):
        provider.metadata  # noqa: B018 - still backing off
    assert idp.requests[DISCOVERY] == 1
    time.sleep(0.25)
    assert provider.metadata.issuer == idp.issuer
    assert idp.requests[DISCOVERY] == 2


def test_a_failed_fetch_is_logged_by_its_kind_without_any_url(idp, caplog):
    idp.mode = "500"
    provider = provider_for(idp)
    with caplog.at_level("WARNING", logger="app.idp_cache"), pytest.raises(IdpUnavailable):
        provider.metadata  # noqa: B018
    assert "metadata fetch failed" in caplog.text and "HTTPError" in caplog.text
    assert "127.0.0.1" not in caplog.text and "http" not in caplog.text.replace("HTTPError", "")


def test_ten_callers_without_a_copy_share_one_fetch_while_the_idp_hangs(idp):
    idp.mode = "hang"
    provider = provider_for(idp)
    outcomes: list = []
    threads = [threading.Thread(target=lambda: outcomes.append(timed(lambda: provider.metadata))) for _ in range(10)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert len(outcomes) == 10 and all(isinstance(outcome, IdpUnavailable) for outcome, _ in outcomes)
    assert elapsed < 2 * TIMEOUT  # about one timeout, not ten one after another
    assert idp.requests[DISCOVERY] == 1


def test_jwks_refetch_failure_for_an_unknown_kid_keeps_the_last_good_keys(idp):
    provider = provider_for(idp)
    provider.metadata  # noqa: B018
    good = provider.keys()
    idp.mode = "500"
    assert provider.keys(refresh=True) is good
    assert idp.requests[JWKS] == 2
    assert provider.keys() is good  # and no further request while backing off
    assert idp.requests[JWKS] == 2


def test_failed_fetches_back_off_exponentially_up_to_the_cap_and_reset_on_success():
    now = 0.0
    failing = True
    attempts: list[float] = []

    def fetch() -> str:
        attempts.append(now)
        if failing:
            raise IdpUnavailable("down")
        return "document"

    cached = CachedDocument("metadata", fetch, wait=1, backoff_initial=1, backoff_max=4, clock=lambda: now)
    for now in range(20):  # noqa: B007 - read by the clock
        with pytest.raises(IdpUnavailable):
            cached.get()
    assert attempts == [0, 1, 3, 7, 11, 15, 19]  # waits of 1, 2, 4, then 4 (the cap)
    failing, now = False, 23
    assert cached.get() == "document"
    failing, now = True, 24
    assert cached.get(max_age=0) == "document"  # the last good copy
    now = 24.5
    assert cached.get(max_age=0) == "document" and attempts[-1] == 24  # backing off 1 s again, not 8
    now = 25
    assert cached.get(max_age=0) == "document" and attempts[-1] == 25
