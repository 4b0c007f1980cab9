"""The API proxy under attack: paths that try to leave the upstream's base path, headers
the browser controls, headers an upstream sends back, bodies over the limit, and redirects that
would name the Host header. The upstream here records every request it receives, so "nothing was
forwarded" is checked at the upstream itself."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

import pytest
from support.stack_fixtures import API_MAX_BODY

from dev.agent import Agent


@pytest.fixture(scope="module")
def signed_in(stack):
    """One signed-in browser for the whole module: these tests attack the proxy, not the session."""
    with Agent(stack.bff_url) as agent:
        agent.login("proxy-attacker")
        yield agent


def raw_request(agent, method: str, target: str, headers: dict[str, str] | None = None, body=None):
    """Send `target` byte for byte (no client-side normalisation of `..` or escapes).
    Returns the status, the headers as a list of pairs and the body."""
    parts = urlsplit(agent.bff_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    cookie = "; ".join(f"{c.name}={c.value}" for c in agent.cookies)
    sent = {"X-CSRF": "1", "Cookie": cookie, **(headers or {})}
    try:
        conn.putrequest(method, target, skip_host="Host" in sent, skip_accept_encoding=True)
        for name, value in sent.items():
            conn.putheader(name, value)
        if isinstance(body, bytes):
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        elif body is not None:  # an iterable of chunks
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for chunk in body:
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name.lower()), None)


ESCAPING_PATHS = [
    "/api/cap/../secret",
    "/api/cap/%2e%2e/secret",
    "/api/cap/%2E%2e/secret",
    "/api/cap/.%2E/secret",
    "/api/cap/..%2fsecret",
    "/api/cap/x%2f..%2f..%2fadmin",
    "/api/cap/x%2F..%2F..%2Fadmin",
    "/api/cap/x/../../admin",
    "/api/cap/./x",
    "/api/cap/x/%2e",
    "/api/cap/x/..",
    "/api/cap/x%3fadmin=true",
    "/api/cap/user/me%23?a=1",
    "/api/cap/a%5c..%5cadmin",
    "/api/cap/a%00b",
    "/api/cap/a\\..\\admin",
    "/api/cap//admin",
    "/api/cap/a//b",
    "/api/cap/a%zzb",
    "/api/ca%70/x",
    # What Java (Tomcat, Jetty, Spring) or IIS upstreams read as `..`:
    "/api/cap/..;/secret",
    "/api/cap/..;jsessionid=x/secret",
    "/api/cap/%c0%ae%c0%ae/secret",
    "/api/cap/%252e%252e/secret",
    "/api/cap/%252f..%252fsecret",
    "/api/cap/.../secret",
    "/api/cap/..%20/secret",
    "/api/cap/%ef%bc%8e%ef%bc%8e/secret",
    "/api/cap/a://b/api/cap/c",
]


@pytest.mark.parametrize("target", ESCAPING_PATHS)
def test_a_path_that_could_leave_the_upstream_base_is_refused_and_nothing_is_forwarded(stack, signed_in, target):
    stack.capture.clear()
    status, _, body = raw_request(signed_in, "GET", target)
    assert status == 400, (status, body)
    assert json.loads(body)["error"] == "invalid_path"
    assert stack.capture.seen == []


@pytest.mark.parametrize(
    ("target", "upstream_target"),
    [
        ("/api/cap/items/7?tab=open&x=%2F", "/base/items/7?tab=open&x=%2F"),
        ("/api/cap/a%20b", "/base/a%20b"),
        ("/api/cap/1%2B1", "/base/1%2B1"),
        ("/api/cap/caf%C3%A9/%E2%82%AC", "/base/caf%C3%A9/%E2%82%AC"),
        ("/api/cap/trailing/", "/base/trailing/"),
        ("/api/cap/", "/base/"),
        ("/api/cap/..x/x..", "/base/..x/x.."),
        ("/api/cap/a%252e%252e", "/base/a%252e%252e"),
        ("/api/cap/items;v=2/x", "/base/items;v=2/x"),
        ("/api/cap/x?next=http://a/../b", "/base/x?next=http://a/../b"),
    ],
)
def test_a_legitimate_path_reaches_the_upstream_byte_for_byte(stack, signed_in, target, upstream_target):
    stack.capture.clear()
    status, _, body = raw_request(signed_in, "GET", target)
    assert status == 200, body
    (seen,) = stack.capture.seen
    assert seen.target == upstream_target


def test_client_headers_reach_the_upstream_only_from_the_allow_list(stack, signed_in):
    stack.capture.clear()
    hostile = {
        "Forwarded": "for=1.2.3.4;host=evil",
        "X-Real-IP": "1.2.3.4",
        "X-Original-URL": "/admin",
        "X-Rewrite-URL": "/admin",
        "X-Forwarded-Port": "1",
        "X-Forwarded-Server": "evil",
        "X-Forwarded-For": "1.2.3.4",
        "X-Forwarded-Host": "evil.example",
        "X-HTTP-Method-Override": "DELETE",
        "X-Remote-User": "admin",
        "X-Forwarded-User": "admin",
        "X-Forwarded-Email": "admin@example.com",
        "X-Auth-Request-User": "admin",
        "Proxy-Connection": "keep-alive",
        "Proxy-Foo": "bar",
        "X-Custom": "not on the list",
        "Authorization": "Bearer forged",
    }
    wanted = {
        "Accept": "application/json",
        "Accept-Language": "fr",
        "If-None-Match": '"v1"',
        "Range": "bytes=0-10",
        "User-Agent": "spa/1.0",
        "X-Request-ID": "trace-hostile-1",
    }
    status, _, _ = raw_request(signed_in, "GET", "/api/cap/headers", headers={**hostile, **wanted})
    assert status == 200
    (seen,) = stack.capture.seen
    names = {k.lower() for k, _ in seen.headers}
    for name in hostile:
        if name.lower() not in ("x-forwarded-for", "x-forwarded-host", "authorization"):
            assert name.lower() not in names, name
    for name, value in wanted.items():
        assert seen.header(name) == value, name
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert seen.header("X-Forwarded-Host") == urlsplit(stack.bff_url).netloc
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Prefix") == "/api/cap"
    assert seen.header("Authorization") != "Bearer forged" and seen.header("Authorization").startswith("Bearer ")


def test_an_upstream_may_list_extra_headers_it_receives(stack, signed_in):
    stack.capture.clear()
    for name in ("cap-tenant", "cap"):
        assert raw_request(signed_in, "GET", f"/api/{name}/x", headers={"X-Tenant": "t-7"})[0] == 200
    tenant, plain = stack.capture.seen
    assert tenant.target == "/tenant/x" and tenant.header("X-Tenant") == "t-7"
    assert plain.header("X-Tenant") is None


def test_the_spa_cookies_are_forwarded_as_sent_without_the_bff_cookies(stack, signed_in):
    stack.capture.clear()
    session = signed_in.session_cookie
    cookie = f'theme=dark; q="a; admin=1"; bff={session}; bff-login-abc=x; other=1'
    status, _, _ = raw_request(signed_in, "GET", "/api/cap/cookies", headers={"Cookie": cookie})
    assert status == 200
    (seen,) = stack.capture.seen
    assert seen.header("Cookie") == 'theme=dark; q="a; admin=1"; other=1'
    assert session not in str(seen.headers)


def test_upstream_headers_that_act_on_the_whole_origin_never_reach_the_browser(stack, signed_in):
    status, headers, _ = raw_request(signed_in, "GET", "/api/cap/hostile-headers")
    assert status == 200
    names = {k.lower() for k, _ in headers}
    dropped = {"set-cookie", "set-cookie2", "clear-site-data", "strict-transport-security", "alt-svc",
               "x-accel-redirect", "x-sendfile", "nel", "report-to", "reporting-endpoints", "cdn-cache-control",
               "surrogate-control", "www-authenticate", "refresh", "x-kept"}  # fmt: skip
    assert not dropped & names
    assert not [n for n in names if n.startswith("access-control-")]
    assert header(headers, "Content-Security-Policy") is None  # JSON: the upstream's policy is not relayed
    assert header(headers, "X-Total-Count") == "7"  # on the allow-list
    cache_control = header(headers, "Cache-Control")
    assert "public" not in cache_control and "s-maxage" not in cache_control and "private" in cache_control


def test_a_cacheable_upstream_answer_is_always_private(stack, signed_in):
    stack.capture.answers["/base/maxage"] = (
        200,
        [("Content-Type", "application/json"), ("Cache-Control", "max-age=60")],
        b"{}",
    )
    _, headers, _ = raw_request(signed_in, "GET", "/api/cap/maxage")
    assert header(headers, "Cache-Control") == "private, max-age=60"


def test_an_upstream_answer_without_content_type_gets_none_not_html(stack, signed_in):
    stack.capture.answers["/base/untyped"] = (200, [], b'{"name": "<img src=x onerror=alert(1)>"}')
    status, headers, _ = raw_request(signed_in, "GET", "/api/cap/untyped")
    assert status == 200 and header(headers, "Content-Type") is None
    assert header(headers, "X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize(
    ("location", "relayed"),
    [
        ("/base/next?a=1", "/api/cap/next?a=1"),
        ("https://evil.example/phish", None),
        ("/api/echo/other-upstream", None),
        ("/base/%2e%2e/%2e%2e/bff/logout", None),
    ],
)
def test_an_upstream_redirect_is_relayed_only_within_its_own_api_path(stack, signed_in, location, relayed):
    stack.capture.answers["/base/redirect"] = (307, [("Location", location)], b"")
    status, headers, _ = raw_request(signed_in, "POST", "/api/cap/redirect", body=b"{}")
    assert status == 307 and header(headers, "Location") == relayed


@pytest.mark.parametrize(("method", "attempts"), [("POST", 1), ("DELETE", 1), ("GET", 2)])
def test_only_safe_requests_are_retried_when_the_upstream_drops_the_connection(stack, signed_in, method, attempts):
    def drop(handler):
        handler.close_connection = True  # read the request, act on it, answer nothing

    stack.capture.clear()
    stack.capture.answers["/base/pay"] = drop
    status, _, _ = raw_request(signed_in, method, "/api/cap/pay?amount=100")
    assert status == 502
    assert [seen.method for seen in stack.capture.seen] == [method] * attempts


def test_a_malformed_chunked_body_gets_400_not_500(stack, signed_in):
    cookie = "; ".join(f"{c.name}={c.value}" for c in signed_in.cookies)
    for path in ("/api/cap/x", "/bff/backchannel-logout"):
        request = (
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nX-CSRF: 1\r\nCookie: {cookie}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\nzz\r\nab\r\n0\r\n\r\n"
        )
        parts = urlsplit(signed_in.bff_url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(request.encode())
            status_line = sock.makefile("rb").readline()
        assert status_line.split()[1] == b"400", (path, status_line)


def test_an_anonymous_caller_learns_no_upstream_names(agent):
    for name in ("cap", "no-such-api"):
        status, _, body = raw_request(agent, "GET", f"/api/{name}/x")
        assert status == 401 and json.loads(body)["error"] == "unauthenticated"


def test_an_upstream_answer_without_cache_control_is_marked_no_store(signed_in):
    status, headers, _ = raw_request(signed_in, "GET", "/api/cap/no-cache-control")
    assert status == 200 and header(headers, "Cache-Control") == "no-store"


def test_a_public_upstream_answer_becomes_private(signed_in):
    _, headers, _ = raw_request(signed_in, "GET", "/api/cap/public")
    assert header(headers, "Cache-Control") == "private, max-age=60"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_at_the_limit_is_forwarded_whole(stack, signed_in, chunked):
    stack.capture.clear()
    body = b"x" * API_MAX_BODY
    payload = [body[: API_MAX_BODY // 2], body[API_MAX_BODY // 2 :]] if chunked else body
    status, _, response = raw_request(signed_in, "POST", "/api/cap/upload", body=payload)
    assert status == 200, response
    (seen,) = stack.capture.seen
    assert seen.body == body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_gets_413_and_the_upstream_sees_no_request(stack, signed_in, chunked):
    stack.capture.clear()
    body = b"x" * (API_MAX_BODY + 1)
    payload = [body[:65536]] * 2 + [body[131072:]] if chunked else body
    status, _, response = raw_request(signed_in, "POST", "/api/cap/upload", body=payload)
    assert status == 413 and json.loads(response)["error"] == "request_too_large"
    assert stack.capture.seen == []


@pytest.mark.parametrize("target", ["/api/cap//x", "/api/cap", "/bff//user", "/api//cap/x"])
def test_no_redirect_names_the_host_the_client_sent(signed_in, target):
    status, headers, _ = raw_request(signed_in, "GET", target, headers={"Host": "evil.example"})
    location = header(headers, "Location") or ""
    assert "evil.example" not in location, (status, location)
    if location.startswith("http"):
        assert location.startswith(signed_in.bff_url)
