"""nginx's offload mode under attack: a red team's findings against its first version, each shown
failing there, and what offload mode must hold as firmly as the Python proxy (DESIGN §8, §9):
no request sent upstream twice, no refused body upstream, no gunicorn thread held by a malformed
body, no client-chosen host, only the Python proxy's headers, methods and body limit."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from support.capture import _Handler

# One process runs these (make test: --dist loadgroup), so that the TLS stack behind nginx and
# chromium start once per run rather than once per process.
pytestmark = [pytest.mark.usefixtures("stack"), pytest.mark.xdist_group("nginx-and-browser")]


@pytest.fixture(scope="module")
def browser(tls):
    with tls.agent() as agent:
        agent.login("nginx-attacker")
        yield agent


def calls(stack, target: str):
    return [s for s in stack.capture.seen if s.target.split("?")[0] == target]


def raw_tls(tls, data: bytes) -> ssl.SSLSocket:
    port = int(tls.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(tls.certificates.ca))
    context.set_alpn_protocols(["http/1.1"])
    sock = context.wrap_socket(socket.create_connection(("localhost", port), timeout=5), server_hostname="localhost")
    sock.sendall(data)
    return sock


def _slow(handler) -> None:
    time.sleep(3)  # past BFF_API_TIMEOUT (2 s)
    with contextlib.suppress(OSError):  # the proxy may have hung up already
        handler._send(200, [("Content-Type", "application/json")], b"{}")


def _hang_up(handler) -> None:
    handler.close_connection = True


def _huge_header(handler) -> None:
    handler._send(200, [("Content-Type", "application/json"), ("X-Big", "a" * 20000)], b"{}")


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        (_slow, 504, "upstream_timeout"),
        (_hang_up, 502, "upstream_unavailable"),
        (_huge_header, 502, "upstream_unavailable"),
    ],
    ids=["timeout", "closed", "huge-header"],
)
def test_a_post_reaches_the_upstream_once_whatever_goes_wrong_after(stack, tls, browser, answer, status, error):
    stack.capture.clear()
    stack.capture.answers["/base/charge"] = answer
    response = browser.post(f"{tls.url}/api/cap/charge", data=b'{"amount": 100}', headers={"X-CSRF": "1"}, timeout=15)
    assert (response.status_code, response.json()["error"]) == (status, error)
    time.sleep(0.5)  # a second POST, if any, would have arrived by now (the fallback is immediate)
    assert [p.method for p in calls(stack, "/base/charge")] == ["POST"]


MALFORMED = b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n"


def _head(browser) -> bytes:
    cookie = f"__Host-bff={browser.session_cookie}"
    return f"POST /api/cap/chunky HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nX-CSRF: 1\r\n".encode()


def test_a_malformed_chunked_body_is_answered_at_once_and_never_reaches_gunicorn_again(stack, tls, browser):
    stack.capture.clear()
    client = raw_tls(tls, _head(browser) + MALFORMED)
    try:
        client.settimeout(3)
        answer = client.recv(200)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert b"application/json" in answer
        assert calls(stack, "/base/chunky") == []
    finally:
        client.close()


def test_two_dozen_malformed_bodies_from_one_user_do_not_freeze_the_bff(tls, browser):
    clients = [raw_tls(tls, _head(browser) + MALFORMED) for _ in range(24)]  # gunicorn: 2 workers x 8 threads
    try:
        time.sleep(1)
        started = time.monotonic()
        response = requests.get(f"{tls.url}/healthz", verify=str(tls.certificates.ca), timeout=5)
        assert response.status_code == 200 and time.monotonic() - started < 2
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("mode", ["offload", "python"])
def test_the_upstream_never_sees_a_host_the_client_chose(stack, tls, browser, mode):
    stack.capture.clear()
    url = tls.url if mode == "offload" else tls.python_url
    cookie = f"__Host-bff={browser.session_cookie}"  # requests drops the jar's cookies under a custom Host
    with tls.agent() as outsider:
        headers = {"X-CSRF": "1", "Host": "evil.example", "Cookie": cookie}
        assert outsider.get(f"{url}/api/cap/reset-link", headers=headers).status_code == 200
    (seen,) = calls(stack, "/base/reset-link")
    assert seen.header("X-Forwarded-Host") == tls.url.removeprefix("https://")


LEAKY = [
    ("Location", "https://evil.example/phish"),
    ("WWW-Authenticate", 'Basic realm="Session expired: enter your password"'),
    ("Link", "<https://evil.example/x.js>; rel=preload; as=script"),
    ("Accept-CH", "Sec-CH-UA-Full-Version-List"),
    ("X-Powered-By", "billing 1.2 on 10.0.3.7"),
]


@pytest.mark.parametrize("mode", ["offload", "python"])
def test_only_allow_listed_upstream_headers_reach_the_browser(stack, tls, browser, mode):
    stack.capture.clear()
    stack.capture.answers["/base/leaky"] = (302, [("Content-Type", "application/json"), *LEAKY], b"{}")
    url = tls.url if mode == "offload" else tls.python_url
    response = browser.get(f"{url}/api/cap/leaky", headers={"X-CSRF": "1"}, allow_redirects=False)
    assert response.status_code == 302
    assert [name for name, _ in LEAKY if name in response.headers] == []


@pytest.mark.parametrize(
    ("location", "mapped"),
    [
        ("/base/orders/7?x=1", "/api/cap/orders/7?x=1"),
        ("http://127.0.0.1:{port}/base/orders/8", "/api/cap/orders/8"),
        ("/base/../admin", None),
        ("/base/%2e%2e/admin", None),
        ("/elsewhere", None),
    ],
)
def test_an_upstream_redirect_is_relayed_only_within_its_own_api_path(stack, tls, browser, location, mapped):
    stack.capture.answers["/base/moved"] = (
        303,
        [("Location", location.format(port=stack.capture.port)), ("Content-Length", "0")],
        b"",
    )
    response = browser.get(f"{tls.url}/api/cap/moved", headers={"X-CSRF": "1"}, allow_redirects=False)
    assert response.status_code == 303
    assert response.headers.get("Location") == mapped


def test_html_from_an_upstream_gets_the_strict_policy(stack, tls, browser):
    stack.capture.answers["/base/page"] = (200, [("Content-Type", "text/html")], b"<script>alert(1)</script>")
    response = browser.get(f"{tls.url}/api/cap/page", headers={"X-CSRF": "1"})
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_api_limit_never_reaches_the_upstream(stack, tls, browser, chunked):
    stack.capture.clear()
    body = b"x" * 50_000  # BFF_API_MAX_BODY is 1000 in the TLS stack
    data = iter([body]) if chunked else body
    response = browser.post(f"{tls.url}/api/cap/upload", data=data, headers={"X-CSRF": "1"})
    assert (response.status_code, response.json()["error"]) == (413, "request_too_large")
    assert calls(stack, "/base/upload") == []


def test_methods_the_python_proxy_refuses_never_reach_the_upstream(stack, tls, browser, monkeypatch):
    monkeypatch.setattr(_Handler, "do_PROPFIND", _Handler._handle, raising=False)
    stack.capture.clear()
    python = browser.request("PROPFIND", f"{tls.python_url}/api/cap/dav", headers={"X-CSRF": "1"})
    offload = browser.request("PROPFIND", f"{tls.url}/api/cap/dav", headers={"X-CSRF": "1"})
    assert (python.status_code, offload.status_code) == (405, 405)
    assert calls(stack, "/base/dav") == []


def test_a_flood_of_anonymous_sign_in_starts_is_cut_at_nginx_before_it_reaches_the_idp(tls):
    """With PAR every /bff/login costs the IdP one authenticated request: nginx lets each client
    address start 5 sign-ins a second (a burst of 20), and answers the rest 429 in the BFF's
    JSON, without asking the BFF (red team, issue 14: 100 anonymous logins were 100 PAR calls)."""
    session = tls.agent()
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: session.get(f"{tls.url}/bff/login", allow_redirects=False), range(60)))
    elapsed = time.monotonic() - started
    passed = [a for a in answers if a.status_code == 302]
    limited = [a for a in answers if a.status_code == 429]
    assert len(passed) + len(limited) == 60, sorted({(a.status_code, a.text[:80]) for a in answers})
    assert len(passed) <= 20 + 5 * elapsed + 1, (len(passed), elapsed)
    assert limited and limited[0].json()["error"] == "too_many_requests"
    assert limited[0].headers["Cache-Control"] == "no-store"
    # Wait for the bucket to let one through again (an event, not a fixed pause), for the next tests.
    deadline = time.monotonic() + 10
    while session.get(f"{tls.url}/bff/login", allow_redirects=False).status_code == 429:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _status(tls, target: str) -> int:
    host = tls.url.split("//", 1)[1]
    sock = raw_tls(tls, f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "target",
    ["//bff/login", "/bff/%6Cogin", "/bff/login/", "/bff/login%2F", "/bff/login%2f?returnUrl=/x", "/bff/logged-out"],
)
def test_no_spelling_of_a_sign_in_start_passes_the_limit(tls, target):
    """Second red team: Flask serves /bff/login/ (and /bff/login%2F, decoded) as sign-in, and
    /bff/logged-out starts a sign-in check (one PAR request per anonymous logout round trip);
    an exact `location = /bff/login` let 60 of 60 through in half a second."""
    deadline = time.monotonic() + 10
    while _status(tls, "/bff/login") == 429:  # the previous burst's bucket, refilling
        assert time.monotonic() < deadline
        time.sleep(0.2)
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: _status(tls, target), range(60)))
    elapsed = time.monotonic() - started
    limited = answers.count(429)
    assert 60 - limited <= 20 + 5 * elapsed + 1, (target, sorted(set(answers)), elapsed)
    deadline = time.monotonic() + 10
    while _status(tls, "/bff/login") == 429:  # leave the bucket as the next tests expect it
        assert time.monotonic() < deadline
        time.sleep(0.2)
