"""The nginx configuration is written from the BFF's settings: pure text checks here; a real
nginx runs it in tests/integration/test_nginx.py."""

import json
from pathlib import Path

import pytest

from app.config import ConfigError, load_settings
from app.crypto import generate_key
from app.nginx_config import NginxOptions, render
from app.proxy_headers import FORWARDED_REQUEST_HEADERS, NEVER_RELAYED

SECRET = "s" * 40


def settings(upstreams: dict, **env: str):
    return load_settings(
        {
            "BFF_PUBLIC_URL": "https://app.example.com",
            "BFF_OIDC_ISSUER": "https://idp.example.com/realms/x",
            "BFF_OIDC_CLIENT_ID": "bff",
            "BFF_OIDC_CLIENT_SECRET": "secret",
            "BFF_SECRET_KEY": "k" * 40,
            "BFF_TOKEN_ENCRYPTION_KEY": generate_key(),
            "BFF_API_UPSTREAMS": json.dumps(upstreams),
            "BFF_AUTHZ_SECRET": SECRET,
            **env,
        }
    )


def location(text: str, path: str) -> str:
    start = text.index(f"location {path} {{")
    return text[start : text.index("\n    }", start)]


def test_each_upstream_gets_an_offloaded_location_with_the_allow_listed_headers_only():
    text = render(settings({"orders": "https://orders.internal/v2", "echo": "http://10.0.0.5:8080"}), NginxOptions())
    orders = location(text, "/api/orders/")
    assert "proxy_pass https://bff_api_orders$bff_upstream_path;" in orders
    assert "proxy_set_header Host orders.internal;" in orders and "proxy_ssl_verify on;" in orders
    assert "proxy_pass_request_headers off;" in orders
    forwarded = {line.split()[1].lower() for line in orders.splitlines() if "$http_" in line}
    assert forwarded == FORWARDED_REQUEST_HEADERS - {"content-length"}
    hidden = {line.split()[1].lower().rstrip(";") for line in orders.splitlines() if "proxy_hide_header" in line}
    assert NEVER_RELAYED - {"connection", "keep-alive", "transfer-encoding"} <= hidden
    assert "server 10.0.0.5:8080;" in text and "server orders.internal:443;" in text


def test_the_secret_is_sent_only_by_the_internal_location_and_cleared_everywhere_else():
    text = render(settings({"echo": "http://10.0.0.5:8080"}), NginxOptions())
    internal = location(text, "= /_bff_authz")
    assert "internal;" in internal and f'X-BFF-Authz-Secret "{SECRET}"' in internal
    assert text.count(SECRET) == 1
    assert 'proxy_set_header X-BFF-Authz-Secret "";' in location(text, "/api/echo/")


def test_python_mode_has_no_api_location_and_no_secret():
    text = render(settings({"echo": "http://10.0.0.5:8080"}), NginxOptions(mode="python"))
    assert "location /api/" not in text
    assert SECRET not in text and "auth_request" not in text


def test_a_forwarded_header_nginx_cannot_name_is_refused():
    odd = settings({"echo": {"url": "http://10.0.0.5:8080", "forward_headers": ["X.Tenant"]}})
    with pytest.raises(ValueError, match=r"x\.tenant"):
        render(odd, NginxOptions())


# deploy/nginx/example.conf is this output, committed so that readers see a whole configuration;
# after a change to nginx_config.py, rewrite it with: .venv/bin/python -m tests.unit.test_nginx_config
EXAMPLE = Path(__file__).parents[2] / "deploy" / "nginx" / "example.conf"
EXAMPLE_ENV = {
    "BFF_PUBLIC_URL": "https://app.example.com",
    "BFF_OIDC_ISSUER": "https://idp.example.com/realms/demo",
    "BFF_OIDC_CLIENT_ID": "bff",
    "BFF_OIDC_CLIENT_SECRET": "unused-here",
    "BFF_SECRET_KEY": "unused-here-but-at-least-32-characters-long",
    "BFF_TOKEN_ENCRYPTION_KEY": "A" * 43,
    "BFF_AUTHZ_SECRET": "REPLACE-WITH-YOUR-BFF_AUTHZ_SECRET-value",
    "BFF_API_UPSTREAMS": json.dumps(
        {"orders": "http://orders.internal:8080/v1", "billing": {"url": "https://billing.internal/api"}}
    ),
}
EXAMPLE_OPTIONS = NginxOptions(
    certificate="/etc/nginx/tls/app.example.com.pem", certificate_key="/etc/nginx/tls/app.example.com.key"
)


def example() -> str:
    return render(load_settings(EXAMPLE_ENV), EXAMPLE_OPTIONS)


def test_the_committed_example_is_what_the_generator_writes():
    assert EXAMPLE.read_text() == example(), "rewrite it: .venv/bin/python -m tests.unit.test_nginx_config"


if __name__ == "__main__":
    EXAMPLE.write_text(example())


def test_every_location_that_sets_its_own_headers_keeps_upstream_connections_alive():
    """A location's own proxy_set_header lines replace the server's, `Connection ""` included;
    without it every API call and every /bff/authz subrequest opens a new connection."""
    text = render(settings({"echo": "http://10.0.0.5:8080"}), NginxOptions())
    for path in ("= /_bff_authz", "/api/echo/"):
        assert 'proxy_set_header Connection "";' in location(text, path), path


@pytest.mark.parametrize("secret", ["short", "a" * 31, "a" * 31 + "$", "a" * 31 + '"', "a" * 31 + ";", "a" * 40 + " b"])
def test_an_authz_secret_nginx_would_not_read_literally_is_refused(secret):
    with pytest.raises(ConfigError, match="BFF_AUTHZ_SECRET"):
        settings({}, BFF_AUTHZ_SECRET=secret)
