import json

import pytest

from app import sign_in_resources
from app.config import ConfigError, load_settings
from app.crypto import generate_key
from app.redis_client import parse_redis_url
from app.server_settings import ServerSettings, load_server_settings
from app.upstreams import Upstream

BASE = {
    "BFF_PUBLIC_URL": "http://localhost:8000",
    "BFF_OIDC_ISSUER": "https://idp.example.com/realms/demo",
    "BFF_OIDC_CLIENT_ID": "spa",
    "BFF_OIDC_CLIENT_SECRET": "s3cret",
}


PRODUCTION = {
    "BFF_PUBLIC_URL": "https://app.example.com",
    "BFF_SECRET_KEY": "k" * 32,
    "BFF_TOKEN_ENCRYPTION_KEY": generate_key(),
}


def test_minimal_environment_gets_documented_defaults():
    settings = load_settings(BASE)
    assert settings.scopes == "openid profile email offline_access"
    assert settings.redis.url == "redis://127.0.0.1:6379/0" and settings.redis.kind == "single"
    assert (settings.session_idle_timeout, settings.session_max_lifetime) == (8 * 3600, 24 * 3600)
    assert settings.post_logout_redirect_uri == "http://localhost:8000/bff/logged-out"
    assert (settings.logout_verify, settings.post_logout_return_url, settings.oidc_prompt) == (True, "/", None)
    assert settings.redirect_uri == "http://localhost:8000/bff/callback"
    assert settings.logout_mode == "client_id"


def test_api_upstreams_are_a_json_object_of_base_urls():
    settings = load_settings(
        {**BASE, "BFF_API_UPSTREAMS": '{"orders": "https://api.example.com/v1/", "echo": "http://127.0.0.1:9100"}'}
    )
    assert settings.api_upstreams == {
        "orders": Upstream("https://api.example.com/v1", frozenset()),
        "echo": Upstream("http://127.0.0.1:9100", frozenset()),
    }
    assert load_settings(BASE).api_upstreams == {}


def test_an_upstream_object_lists_the_extra_headers_it_receives_in_lower_case():
    headers = ["X-Tenant", "If-Match", "x-b3-traceid"]
    raw = json.dumps({"orders": {"url": "https://api.example.com/v1/", "forward_headers": headers}})
    settings = load_settings({**BASE, "BFF_API_UPSTREAMS": raw})
    assert settings.api_upstreams == {
        "orders": Upstream("https://api.example.com/v1", frozenset({"x-tenant", "if-match", "x-b3-traceid"}))
    }
    plain = load_settings({**BASE, "BFF_API_UPSTREAMS": '{"orders": {"url": "https://api.example.com"}}'})
    assert plain.api_upstreams["orders"] == Upstream("https://api.example.com", frozenset())


@pytest.mark.parametrize(
    ("upstream", "named"),
    [
        ({"url": "https://api", "headers": ["X-Tenant"]}, "'headers'"),
        ({"forward_headers": ["X-Tenant"]}, "'url'"),
        ({"url": "https://api", "forward_headers": "X-Tenant"}, "forward_headers"),
        ({"url": "https://api", "forward_headers": [5]}, "forward_headers"),
        ({"url": "https://api", "forward_headers": ["X Tenant"]}, "'X Tenant'"),
        ({"url": "https://api", "forward_headers": ["X-Tenant:"]}, "'X-Tenant:'"),
        ({"url": "https://api", "forward_headers": [""]}, "''"),
        ({"url": "https://api", "forward_headers": ["Authorization"]}, "'Authorization'"),
        ({"url": "https://api", "forward_headers": ["Cookie"]}, "'Cookie'"),
        ({"url": "https://api", "forward_headers": ["X-Forwarded-For"]}, "'X-Forwarded-For'"),
        ({"url": "https://api", "forward_headers": ["x-csrf"]}, "'x-csrf'"),
        ({"url": "ftp://api"}, "'orders'"),
    ],
)
def test_an_upstream_object_with_an_unknown_key_or_a_refused_header_is_named(upstream, named):
    with pytest.raises(ConfigError) as raised:
        load_settings({**BASE, "BFF_API_UPSTREAMS": json.dumps({"orders": upstream})})
    message = str(raised.value)
    assert message.startswith("BFF_API_UPSTREAMS: ") and named in message and "\n" not in message


def test_an_upstream_object_chooses_its_token_policy_resource_and_scope():
    raw = {
        "plain": "https://api.example.com/v1",
        "public": {"url": "https://public.example.com", "token": "none"},
        "maybe": {"url": "https://maybe.example.com", "token": "user_or_none"},
        "jobs": {"url": "https://jobs.example.com", "token": "client", "resource": "urn:jobs", "scope": " run  read "},
        "reports": {"url": "https://reports.example.com", "resource": "https://reports.example.com/"},
    }
    environ = {**BASE, "BFF_API_UPSTREAMS": json.dumps(raw), "BFF_OIDC_RESOURCE": "https://api.example.com"}
    upstreams = load_settings(environ).api_upstreams
    assert upstreams["plain"].policy == "user" and upstreams["plain"].resource is upstreams["plain"].scope is None
    assert upstreams["public"].policy == "none" and upstreams["maybe"].policy == "user_or_none"
    assert (upstreams["jobs"].policy, upstreams["jobs"].resource, upstreams["jobs"].scope) == (
        "client",
        "urn:jobs",
        "run read",
    )
    assert upstreams["reports"].resource == "https://reports.example.com/" and upstreams["reports"].user_token
    assert upstreams["maybe"].user_token and not upstreams["jobs"].user_token and not upstreams["public"].user_token


@pytest.mark.parametrize(
    ("upstream", "named"),
    [
        ({"url": "https://api", "token": "service"}, "'token' must be one of user, user_or_none, client, none"),
        ({"url": "https://api", "token": None}, "'token'"),
        ({"url": "https://api", "resource": "api.example.com"}, "'resource'"),
        ({"url": "https://api", "resource": "https://api#x"}, "'resource'"),
        ({"url": "https://api", "resource": ""}, "'resource'"),
        ({"url": "https://api", "resource": ["urn:a"]}, "'resource'"),
        ({"url": "https://api", "scope": 'read"write'}, "'scope'"),
        ({"url": "https://api", "scope": "  "}, "'scope'"),
        ({"url": "https://api", "scope": 5}, "'scope'"),
        ({"url": "https://api", "token": "none", "resource": "urn:a"}, "token 'none' sends none"),
    ],
)
def test_a_token_policy_that_cannot_work_is_refused_naming_the_upstream(upstream, named):
    with pytest.raises(ConfigError) as raised:
        load_settings({**BASE, "BFF_API_UPSTREAMS": json.dumps({"orders": upstream})})
    assert str(raised.value).startswith("BFF_API_UPSTREAMS: 'orders': ") and named in str(raised.value)


def test_every_upstream_mistake_is_reported_one_line_each():
    raw = {
        "a": {"url": "ftp://x", "token": "bogus"},
        "b": "https://fine.example.com",
        "Bad Name": {"url": "https://x", "extra": 1},
    }
    with pytest.raises(ConfigError) as raised:
        load_settings({**BASE, "BFF_API_UPSTREAMS": json.dumps(raw)})
    lines = str(raised.value).splitlines()
    assert len(lines) == 4 and all(line.startswith("BFF_API_UPSTREAMS: ") for line in lines)
    assert "'a': 'url'" in lines[0] and "'a': 'token'" in lines[1]
    assert "'Bad Name': a name" in lines[2] and "'Bad Name': unknown key 'extra'" in lines[3]


@pytest.mark.parametrize("level", ["DEBUG", "info", "Warning", "error", "CRITICAL"])
def test_log_level_is_one_of_the_standard_names_in_any_case(level):
    assert load_settings({**BASE, "BFF_LOG_LEVEL": level}).log_level == level.upper()
    assert load_settings(BASE).log_level == "INFO"


def test_issuer_with_a_path_is_kept_exactly():
    assert load_settings(BASE).issuer == "https://idp.example.com/realms/demo"
    trailing = load_settings({**BASE, "BFF_OIDC_ISSUER": "https://tenant.auth0.com/"})
    assert trailing.issuer == "https://tenant.auth0.com/"


def test_cookie_is_host_prefixed_and_secure_only_over_https():
    assert load_settings(BASE).cookie_name == "bff"
    https = load_settings({**BASE, **PRODUCTION})
    assert https.cookie_name == "__Host-bff"
    assert https.https


def test_development_generates_a_secret_key_and_says_so():
    settings = load_settings(BASE)
    assert settings.secret_key_generated and len(settings.secret_key) >= 32
    assert settings.token_encryption_key_generated and len(settings.token_encryption_keys[0]) == 32


def test_several_encryption_keys_are_kept_in_order_for_rotation():
    first, second = generate_key(), generate_key()
    settings = load_settings({**BASE, "BFF_TOKEN_ENCRYPTION_KEY": f"{first}, {second}"})
    assert len(settings.token_encryption_keys) == 2 and not settings.token_encryption_key_generated


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"BFF_PUBLIC_URL": None}, "BFF_PUBLIC_URL"),
        ({"BFF_PUBLIC_URL": "localhost:8000"}, "BFF_PUBLIC_URL"),
        ({"BFF_PUBLIC_URL": "https://app.example.com/sub"}, "BFF_PUBLIC_URL"),
        ({"BFF_OIDC_ISSUER": None}, "BFF_OIDC_ISSUER"),
        ({"BFF_OIDC_ISSUER": "ftp://idp"}, "BFF_OIDC_ISSUER"),
        ({"BFF_OIDC_ISSUER": "https://idp/?x=1"}, "BFF_OIDC_ISSUER"),
        ({"BFF_OIDC_CLIENT_ID": ""}, "BFF_OIDC_CLIENT_ID"),
        ({"BFF_OIDC_CLIENT_SECRET": None}, "BFF_OIDC_CLIENT_SECRET"),
        ({"BFF_OIDC_SCOPES": "profile email"}, "BFF_OIDC_SCOPES"),
        ({"BFF_REDIS_URL": "http://127.0.0.1:6379"}, "BFF_REDIS_URL"),
        ({"BFF_SESSION_IDLE_TIMEOUT": "8h"}, "BFF_SESSION_IDLE_TIMEOUT"),
        ({"BFF_SESSION_IDLE_TIMEOUT": "0"}, "BFF_SESSION_IDLE_TIMEOUT"),
        ({"BFF_SESSION_MAX_LIFETIME": "-5"}, "BFF_SESSION_MAX_LIFETIME"),
        ({"BFF_SESSION_IDLE_TIMEOUT": "7200", "BFF_SESSION_MAX_LIFETIME": "3600"}, "BFF_SESSION_IDLE_TIMEOUT"),
        ({"BFF_LOGOUT_MODE": "both"}, "BFF_LOGOUT_MODE"),
        ({"BFF_POST_LOGOUT_REDIRECT_URI": "/signed-out"}, "BFF_POST_LOGOUT_REDIRECT_URI"),
        ({"BFF_PUBLIC_URL": "https://app.example.com"}, "BFF_SECRET_KEY"),
        ({**PRODUCTION, "BFF_TOKEN_ENCRYPTION_KEY": None}, "BFF_TOKEN_ENCRYPTION_KEY"),
        ({"BFF_TOKEN_ENCRYPTION_KEY": "too-short"}, "BFF_TOKEN_ENCRYPTION_KEY"),
        ({"BFF_TOKEN_ENCRYPTION_KEY": "!!not base64!!"}, "BFF_TOKEN_ENCRYPTION_KEY"),
        ({"BFF_SECRET_KEY": "short"}, "BFF_SECRET_KEY"),
        ({"BFF_SERVE_SPA": "maybe"}, "BFF_SERVE_SPA"),
        ({"BFF_IDP_TIMEOUT": "0"}, "BFF_IDP_TIMEOUT"),
        ({"BFF_API_UPSTREAMS": "echo=http://x"}, "BFF_API_UPSTREAMS"),
        ({"BFF_API_UPSTREAMS": '["http://x"]'}, "BFF_API_UPSTREAMS"),
        ({"BFF_API_UPSTREAMS": '{"Bad Name": "http://x"}'}, "BFF_API_UPSTREAMS"),
        ({"BFF_API_UPSTREAMS": '{"echo": "ftp://x"}'}, "BFF_API_UPSTREAMS"),
        ({"BFF_API_UPSTREAMS": '{"echo": "http://x/?q=1"}'}, "BFF_API_UPSTREAMS"),
        ({"BFF_API_UPSTREAMS": '{"echo": 5}'}, "BFF_API_UPSTREAMS"),
        ({"BFF_API_TIMEOUT": "-1"}, "BFF_API_TIMEOUT"),
        ({"BFF_API_MAX_BODY": "1.5"}, "BFF_API_MAX_BODY"),
        ({"BFF_REFRESH_SKEW": "soon"}, "BFF_REFRESH_SKEW"),
        ({"BFF_TRUSTED_PROXIES": "-1"}, "BFF_TRUSTED_PROXIES"),
        ({"BFF_REDIS_TIMEOUT": "0"}, "BFF_REDIS_TIMEOUT"),
        ({"BFF_REDIS_URL": "redis+sentinel://127.0.0.1:26379"}, "BFF_REDIS_URL"),
        ({"BFF_REDIS_URL": "redis+mesh://127.0.0.1"}, "BFF_REDIS_URL"),
        ({"BFF_REDIS_URL": "redis://h:abc/0"}, "BFF_REDIS_URL"),
        ({"BFF_REDIS_URL": "redis://h:6379/x"}, "BFF_REDIS_URL"),
        ({"BFF_REDIS_URL": "redis://h:99999/0"}, "BFF_REDIS_URL"),
        ({"BFF_REDIS_URL": "rediss://h:6380/0?socket_timeout=soon"}, "BFF_REDIS_URL"),
        ({"BFF_REDIS_URL": "redis:///0"}, "BFF_REDIS_URL"),
        ({"BFF_REDIS_URL": "unix://"}, "BFF_REDIS_URL"),
        ({"BFF_LOG_LEVEL": "loud"}, "BFF_LOG_LEVEL"),
        ({"BFF_LOG_LEVEL": "10"}, "BFF_LOG_LEVEL"),
    ],
)
def test_invalid_setting_is_reported_by_its_variable_name(change, variable):
    environ = {**BASE, **change}
    environ = {k: v for k, v in environ.items() if v is not None}
    with pytest.raises(ConfigError) as raised:
        load_settings(environ)
    assert str(raised.value).startswith(f"{variable}: ")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "kind", "nodes", "master", "db"),
    [
        ("redis://127.0.0.1:6379/0", "single", (), "", 0),
        ("rediss://cache.example.com:6380/2", "single", (), "", 0),
        ("unix:///run/redis.sock", "single", (), "", 0),
        ("redis+sentinel://s1:26379,s2:26380/mymaster/3", "sentinel", (("s1", 26379), ("s2", 26380)), "mymaster", 3),
        ("redis+sentinel://s1/mymaster", "sentinel", (("s1", 26379),), "mymaster", 0),
        ("redis+cluster://n1:7000,n2:7001,n3:7002", "cluster", (("n1", 7000), ("n2", 7001), ("n3", 7002)), "", 0),
        ("rediss+cluster://:secret@n1", "cluster", (("n1", 6379),), "", 0),
    ],
)
def test_redis_url_selects_single_sentinel_or_cluster(url, kind, nodes, master, db):
    target = parse_redis_url(url)
    assert (target.kind, target.nodes, target.master, target.db) == (kind, nodes, master, db)
    assert load_settings({**BASE, "BFF_REDIS_URL": url}).redis == target  # parsed once, kept parsed


def test_redis_credentials_and_tls_come_from_the_url():
    target = parse_redis_url("rediss+sentinel://bff:p%40ss@s1:26379/main")
    assert (target.username, target.password, target.tls) == ("bff", "p@ss", True)


def test_server_settings_default_to_the_documented_values():
    assert load_server_settings({}) == ServerSettings(
        bind="127.0.0.1:8000",
        worker_class="gthread",
        workers=2,
        threads=8,
        worker_timeout=60,
        graceful_timeout=30,
        keepalive=5,
        forwarded_allow_ips="127.0.0.1",
    )


def test_server_settings_accept_every_documented_form():
    server = load_server_settings(
        {
            "BFF_BIND": "[::1]:8080",
            "BFF_WORKER_CLASS": "sync",
            "BFF_WORKERS": "4",
            "BFF_THREADS": "1",
            "BFF_WORKER_TIMEOUT": "120",
            "BFF_GRACEFUL_TIMEOUT": "10",
            "BFF_KEEPALIVE": "0",
            "FORWARDED_ALLOW_IPS": "10.0.0.1, 192.168.0.0/16,::1",
        }
    )
    assert (server.bind, server.worker_class, server.workers, server.threads) == ("[::1]:8080", "sync", 4, 1)
    assert (server.worker_timeout, server.graceful_timeout, server.keepalive) == (120, 10, 0)
    assert server.forwarded_allow_ips == "10.0.0.1,192.168.0.0/16,::1"
    for bind in ("0.0.0.0:8000", "unix:/run/bff.sock", "fd://3", "localhost:80"):
        assert load_server_settings({"BFF_BIND": bind}).bind == bind
    assert load_server_settings({"FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == "*"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BFF_BIND", "localhost"),
        ("BFF_BIND", "127.0.0.1:http"),
        ("BFF_BIND", "127.0.0.1:70000"),
        ("BFF_BIND", ":8000"),
        ("BFF_BIND", "unix:"),
        ("BFF_BIND", "fd://three"),
        ("BFF_WORKER_CLASS", "eventlet"),
        ("BFF_WORKER_CLASS", "gevent"),
        ("BFF_WORKERS", "two"),
        ("BFF_WORKERS", "0"),
        ("BFF_WORKERS", "1.5"),
        ("BFF_THREADS", "x"),
        ("BFF_THREADS", "-1"),
        ("BFF_WORKER_TIMEOUT", "1m"),
        ("BFF_WORKER_TIMEOUT", "0"),
        ("BFF_GRACEFUL_TIMEOUT", "-30"),
        ("BFF_KEEPALIVE", "-1"),
        ("BFF_KEEPALIVE", "five"),
        ("FORWARDED_ALLOW_IPS", "proxy.internal"),
        ("FORWARDED_ALLOW_IPS", "10.0.0.1,,10.0.0.2"),
        ("FORWARDED_ALLOW_IPS", "10.0.0.0/33"),
    ],
)
def test_invalid_server_setting_is_reported_by_its_variable_name(name, value):
    with pytest.raises(ConfigError) as raised:
        load_server_settings({name: value})
    assert str(raised.value).startswith(f"{name}: ")
    assert "\n" not in str(raised.value)


def test_a_resource_for_user_tokens_needs_the_sign_ins_own_resource_named():
    upstreams = json.dumps({"reports": {"url": "https://r.example.com", "resource": "urn:reports"}})
    with pytest.raises(ConfigError) as raised:
        load_settings({**BASE, "BFF_API_UPSTREAMS": upstreams})
    assert str(raised.value).startswith("BFF_OIDC_RESOURCE: required when an upstream names a resource") and (
        "reports" in str(raised.value)
    )
    settings = load_settings({**BASE, "BFF_API_UPSTREAMS": upstreams, "BFF_OIDC_RESOURCE": "urn:echo"})
    assert sign_in_resources(settings) == ("urn:echo", "urn:reports")
    client_only = json.dumps({"jobs": {"url": "https://j.example.com", "token": "client", "resource": "urn:jobs"}})
    assert sign_in_resources(load_settings({**BASE, "BFF_API_UPSTREAMS": client_only})) == ()
    with pytest.raises(ConfigError, match=r"^BFF_OIDC_RESOURCE: must be an absolute URI"):
        load_settings({**BASE, "BFF_OIDC_RESOURCE": "echo#x"})
