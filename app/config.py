"""Settings from the environment, validated once at start.

Every problem is reported as a `ConfigError` whose message starts with the variable's name, so
an operator sees one line that says what to fix instead of a traceback from deep inside a
request.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from redis.connection import parse_url as redis_parse_url

from .crypto import generate_key, parse_keys
from .proxy_headers import never_forwarded, never_relayed
from .sessions import parse_redis_url

DEFAULT_SCOPES = "openid profile email offline_access"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOGOUT_MODES = ("client_id", "id_token_hint")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
WORKER_CLASSES = ("gthread", "sync")  # the two gunicorn workers installed (no eventlet or gevent)
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")
UPSTREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
UPSTREAM_KEYS = ("url", "forward_headers", "return_headers")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
# gunicorn's bind forms: host:port, [v6 address]:port, unix:<path>, fd://<number>
BIND = re.compile(r"^(?:unix:.+|fd://\d+|(?:tcp://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d{1,5}))$")


class ConfigError(ValueError):
    """A missing or invalid setting; the message names the variable."""


@dataclass(frozen=True)
class Upstream:
    """An API behind /api/<name>/: its base URL (no trailing slash) and the browser's headers it
    receives beyond the proxy's allow-list (lower-case names)."""

    url: str
    forward_headers: frozenset[str] = frozenset()
    return_headers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Settings:
    public_url: str
    issuer: str
    client_id: str
    client_secret: str
    scopes: str = DEFAULT_SCOPES
    redis_url: str = DEFAULT_REDIS_URL
    secret_key: str = ""
    secret_key_generated: bool = False
    token_encryption_keys: tuple[bytes, ...] = ()
    token_encryption_key_generated: bool = False
    session_idle_timeout: int = 8 * 3600
    session_max_lifetime: int = 24 * 3600
    post_logout_redirect_uri: str = ""
    logout_mode: str = "client_id"
    fetch_userinfo: bool = True
    serve_spa: bool = True
    idp_timeout: float = 5.0
    revocation_timeout: float = 2.0
    api_upstreams: dict[str, Upstream] = field(default_factory=dict)
    api_timeout: float = 30.0
    api_max_body: int = 10 * 1024 * 1024
    refresh_skew: int = 30
    trusted_proxies: int = 0
    redis_timeout: float = 1.0
    log_level: str = "INFO"

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def redirect_uri(self) -> str:
        return self.public_url + "/bff/callback"

    @property
    def cookie_name(self) -> str:
        """`__Host-` pins the cookie to this host and path / with Secure; browsers refuse it on http."""
        return "__Host-bff" if self.https else "bff"


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build `Settings` from environment variables, or raise `ConfigError` naming the culprit."""
    public_url = _url(environ, "BFF_PUBLIC_URL", path_allowed=False).rstrip("/")
    https = public_url.startswith("https://")
    secret_key = environ.get("BFF_SECRET_KEY", "")
    generated = False
    if not secret_key:
        if https:
            raise ConfigError("BFF_SECRET_KEY: required when BFF_PUBLIC_URL is https (production)")
        secret_key, generated = secrets.token_urlsafe(32), True
    elif len(secret_key) < 32:
        raise ConfigError("BFF_SECRET_KEY: must be at least 32 characters")

    encryption_keys, keys_generated = _encryption_keys(environ, https)
    idle = _number(environ, "BFF_SESSION_IDLE_TIMEOUT", 8 * 3600, whole=True)
    lifetime = _number(environ, "BFF_SESSION_MAX_LIFETIME", 24 * 3600, whole=True)
    if idle > lifetime:
        raise ConfigError("BFF_SESSION_IDLE_TIMEOUT: must not exceed BFF_SESSION_MAX_LIFETIME")

    scopes = " ".join(environ.get("BFF_OIDC_SCOPES", DEFAULT_SCOPES).split())
    if "openid" not in scopes.split():
        raise ConfigError("BFF_OIDC_SCOPES: must include 'openid'")

    name = "BFF_POST_LOGOUT_REDIRECT_URI"
    post_logout = _url(environ, name) if name in environ else public_url + "/"

    return Settings(
        public_url=public_url,
        issuer=_url(environ, "BFF_OIDC_ISSUER"),
        client_id=_required(environ, "BFF_OIDC_CLIENT_ID"),
        client_secret=_required(environ, "BFF_OIDC_CLIENT_SECRET"),
        scopes=scopes,
        redis_url=_redis_url(environ),
        secret_key=secret_key,
        secret_key_generated=generated,
        token_encryption_keys=encryption_keys,
        token_encryption_key_generated=keys_generated,
        session_idle_timeout=idle,
        session_max_lifetime=lifetime,
        post_logout_redirect_uri=post_logout,
        logout_mode=_choice(environ, "BFF_LOGOUT_MODE", LOGOUT_MODES, "client_id"),
        fetch_userinfo=_flag(environ, "BFF_OIDC_USERINFO", True),
        serve_spa=_flag(environ, "BFF_SERVE_SPA", True),
        idp_timeout=_number(environ, "BFF_IDP_TIMEOUT", 5.0, whole=False, maximum=60),
        revocation_timeout=_number(environ, "BFF_REVOCATION_TIMEOUT", 2.0, whole=False, maximum=60),
        api_upstreams=_upstreams(environ),
        api_timeout=_number(environ, "BFF_API_TIMEOUT", 30.0, whole=False, maximum=3600),
        api_max_body=_number(environ, "BFF_API_MAX_BODY", 10 * 1024 * 1024, whole=True, unit="bytes"),
        refresh_skew=_number(environ, "BFF_REFRESH_SKEW", 30, whole=True),
        trusted_proxies=_count(environ, "BFF_TRUSTED_PROXIES"),
        redis_timeout=_number(environ, "BFF_REDIS_TIMEOUT", 1.0, whole=False, maximum=30),
        log_level=_choice(environ, "BFF_LOG_LEVEL", LOG_LEVELS, "INFO", str.upper),
    )


@dataclass(frozen=True)
class ServerSettings:
    """gunicorn's settings, as gunicorn.conf.py reads them from the environment."""

    bind: str = "127.0.0.1:8000"
    worker_class: str = "gthread"
    workers: int = 2
    threads: int = 8
    worker_timeout: int = 60
    graceful_timeout: int = 30
    keepalive: int = 5
    # gunicorn also reads FORWARDED_ALLOW_IPS itself, and checks it the same way, before
    # gunicorn.conf.py runs: its one-line message names the value rather than the variable.
    forwarded_allow_ips: str = "127.0.0.1"


def load_server_settings(environ: Mapping[str, str]) -> ServerSettings:
    """Build `ServerSettings` from environment variables, or raise `ConfigError` naming the culprit."""
    default = ServerSettings()
    return ServerSettings(
        bind=_bind(environ, "BFF_BIND", default.bind),
        worker_class=_choice(environ, "BFF_WORKER_CLASS", WORKER_CLASSES, default.worker_class),
        workers=_number(environ, "BFF_WORKERS", default.workers, whole=True, maximum=256, unit="workers"),
        threads=_number(environ, "BFF_THREADS", default.threads, whole=True, maximum=1024, unit="threads"),
        worker_timeout=_number(environ, "BFF_WORKER_TIMEOUT", default.worker_timeout, whole=True),
        graceful_timeout=_number(environ, "BFF_GRACEFUL_TIMEOUT", default.graceful_timeout, whole=True),
        keepalive=_number(environ, "BFF_KEEPALIVE", default.keepalive, whole=True, zero_allowed=True),
        forwarded_allow_ips=_addresses(environ, "FORWARDED_ALLOW_IPS", default.forwarded_allow_ips),
    )


def _redis_url(environ: Mapping[str, str]) -> str:
    """Sentinel and Cluster URLs as app.sessions reads them; one server's as redis-py does, which
    ignores a database that is not a number, so that is checked here."""
    url = environ.get("BFF_REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(f"BFF_REDIS_URL: scheme must be one of {', '.join(REDIS_SCHEMES)}")
    try:
        if parse_redis_url(url).kind == "single":
            redis_parse_url(url)
    except ValueError as error:
        raise ConfigError(f"BFF_REDIS_URL: {error}") from None
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError("BFF_REDIS_URL: must name the socket, as in unix:///run/redis/redis.sock")
    if parts.scheme in ("redis", "rediss") and not (parts.hostname and re.fullmatch(r"/?|/\d+", parts.path)):
        raise ConfigError(
            f"BFF_REDIS_URL: must name a host and a database number, as in redis://host:6379/0, got {url!r}"
        )
    return url


def _upstreams(environ: Mapping[str, str]) -> dict[str, Upstream]:
    """`{"name": "https://api.example.com/base"}`: /api/<name>/<path> goes to base + /<path>.
    A value may also be `{"url": "https://…", "forward_headers": ["X-Tenant"], "return_headers":
    ["X-Page-Count"]}`: headers beyond the allow-lists, sent up and relayed back."""
    raw = environ.get("BFF_API_UPSTREAMS", "").strip()
    if not raw:
        return {}
    try:
        upstreams = json.loads(raw)
    except ValueError:
        raise ConfigError('BFF_API_UPSTREAMS: must be a JSON object such as {"orders": "https://api/v1"}') from None
    if not isinstance(upstreams, dict):
        raise ConfigError('BFF_API_UPSTREAMS: must be a JSON object such as {"orders": "https://api/v1"}')
    return {name: _upstream(name, value) for name, value in upstreams.items()}


def _upstream(name: str, value: object) -> Upstream:
    if not UPSTREAM_NAME.match(name):
        raise ConfigError(f"BFF_API_UPSTREAMS: name {name!r} must be lowercase letters, digits, - or _")
    if not isinstance(value, dict):
        value = {"url": value}
    for key in value:
        if key not in UPSTREAM_KEYS:
            raise ConfigError(
                f"BFF_API_UPSTREAMS: {name!r} has unknown key {key!r} ({', '.join(UPSTREAM_KEYS)} are known)"
            )
    if "url" not in value:
        raise ConfigError(f"BFF_API_UPSTREAMS: {name!r} has no 'url'")
    base = value["url"]
    parts = urlsplit(base) if isinstance(base, str) else None
    if not parts or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"BFF_API_UPSTREAMS: {name!r} must map to an absolute http(s) URL without query")
    forward = _header_names(name, value, "forward_headers", never_forwarded, "forwarded")
    relay = _header_names(name, value, "return_headers", never_relayed, "relayed")
    return Upstream(base.rstrip("/"), forward, relay)


def _header_names(name: str, value: dict, key: str, refused: Callable[[str], bool], verb: str) -> frozenset[str]:
    headers = value.get(key, [])
    if not isinstance(headers, list) or not all(isinstance(header, str) for header in headers):
        raise ConfigError(f"BFF_API_UPSTREAMS: {name!r}: {key} must be a list of header names")
    for header in headers:
        if not HEADER_NAME.fullmatch(header):
            raise ConfigError(f"BFF_API_UPSTREAMS: {name!r}: {header!r} is not a valid header name")
        if refused(header):
            raise ConfigError(f"BFF_API_UPSTREAMS: {name!r}: header {header!r} is never {verb}")
    return frozenset(header.lower() for header in headers)


def _encryption_keys(environ: Mapping[str, str], https: bool) -> tuple[tuple[bytes, ...], bool]:
    raw = environ.get("BFF_TOKEN_ENCRYPTION_KEY", "").strip()
    if not raw:
        if https:
            raise ConfigError("BFF_TOKEN_ENCRYPTION_KEY: required when BFF_PUBLIC_URL is https (production)")
        return (base64.urlsafe_b64decode(generate_key() + "="),), True
    try:
        return tuple(parse_keys(raw)), False
    except ValueError as error:
        raise ConfigError(f"BFF_TOKEN_ENCRYPTION_KEY: {error}") from None


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name}: required but not set")
    return value


def _url(environ: Mapping[str, str], name: str, path_allowed: bool = True) -> str:
    value = _required(environ, name)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: must be an absolute http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}: must not carry a query or fragment")
    if not path_allowed and parts.path not in ("", "/"):
        raise ConfigError(f"{name}: must be an origin without a path, such as https://app.example.com")
    return value


def _number(
    environ: Mapping[str, str],
    name: str,
    default: float,
    whole: bool,
    maximum: float | None = None,
    unit: str = "seconds",
    zero_allowed: bool = False,
):
    """A positive number (of seconds unless `unit` says otherwise): whole for lifetimes and
    counts, fractional (and capped) for timeouts."""
    raw = environ.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = f"a whole number of {unit}" if whole else f"a number of {unit}"
        raise ConfigError(f"{name}: must be {kind}, got {raw!r}") from None
    if value < 0 or (value == 0 and not zero_allowed) or (maximum is not None and value > maximum):
        least = "0 or more" if zero_allowed else "positive"
        limit = f" and at most {maximum:g}" if maximum is not None else ""
        raise ConfigError(f"{name}: must be {least}{limit}, got {raw}")
    return value


def _count(environ: Mapping[str, str], name: str) -> int:
    raw = environ.get(name, "").strip() or "0"
    if not raw.isdigit() or int(raw) > 10:
        raise ConfigError(f"{name}: must be a whole number from 0 to 10, got {raw!r}")
    return int(raw)


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: must be true or false, got {raw!r}")


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...], default: str, normalise=str) -> str:
    value = normalise(environ.get(name, "").strip()) or default
    if value not in choices:
        raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def _bind(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip() or default
    match = BIND.match(value)
    if not match or not 0 < int(match["port"] or 1) < 65536:
        raise ConfigError(f"{name}: must be host:port, [v6 address]:port, unix:/path or fd://<number>, got {value!r}")
    return value


def _addresses(environ: Mapping[str, str], name: str, default: str) -> str:
    """`*`, or comma-separated IP addresses and networks (gunicorn's forwarded_allow_ips)."""
    value = environ.get(name, "").strip() or default
    if value == "*":
        return value
    entries = [entry.strip() for entry in value.split(",")]
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: must be * or comma-separated IP addresses or networks, got {entry!r}") from None
    return ",".join(entries)
