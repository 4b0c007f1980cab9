"""The proxy's pure rules: raw-path checks, the upstream URL, header allow-lists both ways, the
redirects it relays."""

from __future__ import annotations

import pytest

from app.errors import BffError
from app.proxy_headers import (
    foreign_cookies,
    forwarded_request_headers,
    mapped_location,
    never_forwarded,
    never_relayed,
    private_cache_control,
    relayed_response_headers,
)
from app.proxy_paths import api_tail, raw_path, upstream_url


@pytest.mark.parametrize(
    "tail",
    ["..", ".", "%2e%2E", ".%2e", "a/../b", "a/%2E", "a%2fb", "a%2Fb", "a%5cb", "a%3fb", "a%23b", "a%00b",
     "a\\b", "a#b", "a b", "a\tb", "/a", "a//b", "a%zz", "a%2", "%",
     # What Java (Tomcat, Jetty, Spring) or IIS upstreams read as `.` or `..`:
     "..;/x", "%2e%2e;/x", "..;jsessionid=x/x", ".;/x", "..%3b/x", "%c0%ae%c0%ae/x", "%c0%2e%c0%2e/x",
     "%e0%80%ae%e0%80%ae/x", "%252e%252e/x", "%25252e%25252e/x", "%252f..%252fx", "a%255cb", ".../x",
     "..%20/x", "..%09/x", "%ef%bc%8e%ef%bc%8e/x", "%e2%80%a5/x", "\xe9",
     # Full-width or small separators an NFKC ("best-fit") upstream folds into `/`, `\\` or `?`:
     "..%ef%bc%8f..%ef%bc%8fsecret", "x%ef%bc%bc..%ef%bc%bc..", "..%ef%b9%a8", "x%ef%bc%9fadmin=1"],
)  # fmt: skip
def test_tails_that_could_escape_or_confuse_are_invalid_paths(tail):
    with pytest.raises(BffError) as error:
        api_tail("/api/x/" + tail, "/api/x/")
    assert (error.value.status, error.value.code) == (400, "invalid_path")


@pytest.mark.parametrize(
    ("tail", "expected"),
    [("", ""), ("a/b/", "a/b/"), ("a%20b", "a%20b"), ("1%2B1", "1%2B1"), ("..a/b..", "..a/b.."),
     ("caf\u00c3\u00a9", "caf%C3%A9"), ("a;b=c,d", "a;b=c,d"), ("items;v=2", "items;v=2"),
     ("50%25off", "50%25off"), ("a%252e%252e", "a%252e%252e"), ("v1.2", "v1.2")],
)  # fmt: skip
def test_legitimate_tails_pass_unchanged_and_raw_high_bytes_get_encoded(tail, expected):
    assert api_tail("/api/x/" + tail, "/api/x/") == expected


def test_a_path_outside_the_prefix_is_invalid():
    with pytest.raises(BffError):
        api_tail("/api/y/a", "/api/x/")


def test_the_raw_path_comes_from_the_servers_raw_uri_and_drops_an_absolute_forms_origin():
    assert raw_path({"RAW_URI": "/api/x/a%2fb?q=1"}) == "/api/x/a%2fb"
    assert raw_path({"RAW_URI": "http://host:1/api/x/a?q"}) == "/api/x/a"
    assert raw_path({"PATH_INFO": "/api/x/a b"}) == "/api/x/a%20b"
    assert raw_path({"RAW_URI": "/api/x/a://b/api/x/c"}) == "/api/x/a://b/api/x/c"  # origin-form stays whole


@pytest.mark.parametrize(
    ("base", "tail", "query", "expected"),
    [
        ("http://u/base", "a", "", "http://u/base/a"),
        ("http://u/base", "a", "q=%2F", "http://u/base/a?q=%2F"),
        ("http://u", "", "", "http://u/"),
    ],
)
def test_the_upstream_url_is_the_base_plus_the_tail(base, tail, query, expected):
    assert upstream_url(base, tail, query) == expected


def test_a_built_url_that_leaves_the_base_is_refused_even_if_a_rule_missed_it():
    with pytest.raises(BffError):
        upstream_url("http://u/base", "../admin", "")
    assert upstream_url("http://u:1/base", "@evil/x", "") == "http://u:1/base/@evil/x"


def test_request_headers_are_allow_listed_and_connection_listed_ones_dropped():
    headers = [("Accept", "a"), ("X-Tenant", "t"), ("X-Other", "o"), ("Forwarded", "f"), ("Range", "r"),
               ("Connection", "Range")]  # fmt: skip
    assert forwarded_request_headers(headers, frozenset({"x-tenant"})) == {"Accept": "a", "X-Tenant": "t"}


@pytest.mark.parametrize(
    "name", ["Forwarded", "X-Real-IP", "Proxy-Foo", "X-Forwarded-User", "X-Auth-Request-Email", "Cookie", "Host"]
)
def test_identity_and_routing_headers_are_never_forwardable(name):
    assert never_forwarded(name)


def test_foreign_cookies_keep_the_raw_bytes_and_drop_every_bff_cookie():
    raw = 'a=1; q="x; admin=1"; bff=SECRET; bff-login-abc=S2; zz=2'
    assert foreign_cookies(raw, ("bff", "bff-login-")) == 'a=1; q="x; admin=1"; zz=2'
    assert foreign_cookies('q="x; bff=SECRET"', ("bff", "bff-login-")) == 'q="x'
    host = ("__Host-bff", "__Secure-bff-login-")
    assert foreign_cookies("__Host-bff=S; __Secure-bff-login-abc=T; a=1", host) == "a=1"


def test_response_headers_are_allow_listed_and_caching_is_always_private():
    headers = [("Set-Cookie", "a=1"), ("Clear-Site-Data", "*"), ("Strict-Transport-Security", "max-age=0"),
               ("Access-Control-Allow-Origin", "*"), ("Connection", "X-Hop"), ("X-Hop", "1"), ("ETag", "e"),
               ("X-Accel-Redirect", "/internal"), ("NEL", "{}"), ("Report-To", "{}"), ("X-Custom", "c"),
               ("Content-Security-Policy", "script-src *"), ("CDN-Cache-Control", "public"), ("Location", "/x"),
               ("Cache-Control", "public, max-age=5"), ("Cache-Control", "must-revalidate")]  # fmt: skip
    assert relayed_response_headers(headers) == [
        ("ETag", "e"),
        ("Cache-Control", "private, max-age=5, must-revalidate"),
    ]
    assert relayed_response_headers([("ETag", "e")], status=304) == [("ETag", "e")]  # updates the stored answer
    assert relayed_response_headers([("X-Custom", "c")], frozenset({"x-custom"})) == [
        ("X-Custom", "c"),
        ("Cache-Control", "no-store"),
    ]


@pytest.mark.parametrize(
    "name", ["Set-Cookie", "X-Accel-Redirect", "NEL", "Reporting-Endpoints", "Cloudflare-CDN-Cache-Control",
             "Access-Control-Allow-Origin", "Cross-Origin-Resource-Policy", "Keep-Alive"],
)  # fmt: skip
def test_origin_wide_and_proxy_steering_headers_are_never_relayable(name):
    assert never_relayed(name)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://u:1/base/next?a=1", "/api/n/next?a=1"),
        ("/base/x/y", "/api/n/x/y"),
        ("sibling", "/api/n/items/sibling"),
        ("https://evil.example/x", None),
        ("/other/x", None),
        ("/base/%2e%2e/%2e%2e/bff/logout", None),
        ("//evil.example/base/x", None),
    ],
)
def test_an_upstream_redirect_is_relayed_only_within_its_own_base(location, expected):
    assert mapped_location(location, "http://u:1/base/items/7", "http://u:1/base", "/api/n") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("public", "private"), ("no-cache", "private, no-cache"), ("max-age=5, s-maxage=9", "private, max-age=5"),
     ("private, public", "private"), ("", "no-store"), ("no-store", "no-store"),
     ("max-age=3600", "private, max-age=3600"), ('private="X-Secret", max-age=3600', "private, max-age=3600"),
     ('no-cache="Set-Cookie", max-age=600', 'private, no-cache="Set-Cookie", max-age=600')],
)  # fmt: skip
def test_cache_control_never_lets_shared_caches_keep_the_answer(value, expected):
    assert private_cache_control(value) == expected
