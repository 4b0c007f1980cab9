"""Settings from the environment, validated once at start.

Every problem is reported as a `ConfigError` whose message starts with the variable's name, so
an operator sees one line that says what to fix instead of a traceback from deep inside a
request.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .crypto import generate_key, parse_keys
from .sessions import parse_redis_url

DEFAULT_SCOPES = "openid profile email offline_access"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOGOUT_MODES = ("client_id", "id_token_hint")
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")
UPSTREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ConfigError(ValueError):
    """A missing or invalid setting; the message names the variable."""


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
    api_upstreams: dict[str, str] = field(default_factory=dict)
    api_timeout: float = 30.0
    api_max_body: int = 10 * 1024 * 1024
    refresh_skew: int = 30
    trusted_proxies: int = 0
    redis_timeout: float = 1.0

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

    logout_mode = environ.get("BFF_LOGOUT_MODE", "client_id")
    if logout_mode not in LOGOUT_MODES:
        raise ConfigError(f"BFF_LOGOUT_MODE: must be one of {', '.join(LOGOUT_MODES)}")

    redis_url = environ.get("BFF_REDIS_URL", DEFAULT_REDIS_URL)
    if urlsplit(redis_url).scheme not in REDIS_SCHEMES:
        raise ConfigError(f"BFF_REDIS_URL: scheme must be one of {', '.join(REDIS_SCHEMES)}")
    try:
        parse_redis_url(redis_url)
    except ValueError as error:
        raise ConfigError(f"BFF_REDIS_URL: {error}") from None

    name = "BFF_POST_LOGOUT_REDIRECT_URI"
    post_logout = _url(environ, name) if name in environ else public_url + "/"

    return Settings(
        public_url=public_url,
        issuer=_url(environ, "BFF_OIDC_ISSUER"),
        client_id=_required(environ, "BFF_OIDC_CLIENT_ID"),
        client_secret=_required(environ, "BFF_OIDC_CLIENT_SECRET"),
        scopes=scopes,
        redis_url=redis_url,
        secret_key=secret_key,
        secret_key_generated=generated,
        token_encryption_keys=encryption_keys,
        token_encryption_key_generated=keys_generated,
        session_idle_timeout=idle,
        session_max_lifetime=lifetime,
        post_logout_redirect_uri=post_logout,
        logout_mode=logout_mode,
        fetch_userinfo=_flag(environ, "BFF_OIDC_USERINFO", True),
        serve_spa=_flag(environ, "BFF_SERVE_SPA", True),
        idp_timeout=_number(environ, "BFF_IDP_TIMEOUT", 5.0, whole=False, maximum=60),
        revocation_timeout=_number(environ, "BFF_REVOCATION_TIMEOUT", 2.0, whole=False, maximum=60),
        api_upstreams=_upstreams(environ),
        api_timeout=_number(environ, "BFF_API_TIMEOUT", 30.0, whole=False, maximum=3600),
        api_max_body=_number(environ, "BFF_API_MAX_BODY", 10 * 1024 * 1024, whole=True),
        refresh_skew=_number(environ, "BFF_REFRESH_SKEW", 30, whole=True),
        trusted_proxies=_count(environ, "BFF_TRUSTED_PROXIES"),
        redis_timeout=_number(environ, "BFF_REDIS_TIMEOUT", 1.0, whole=False, maximum=30),
    )


def _upstreams(environ: Mapping[str, str]) -> dict[str, str]:
    """`{"name": "https://api.example.com/base"}`: /api/<name>/<path> goes to base + /<path>."""
    raw = environ.get("BFF_API_UPSTREAMS", "").strip()
    if not raw:
        return {}
    try:
        upstreams = json.loads(raw)
    except ValueError:
        raise ConfigError('BFF_API_UPSTREAMS: must be a JSON object such as {"orders": "https://api/v1"}') from None
    if not isinstance(upstreams, dict):
        raise ConfigError('BFF_API_UPSTREAMS: must be a JSON object such as {"orders": "https://api/v1"}')
    for name, base in upstreams.items():
        if not UPSTREAM_NAME.match(name):
            raise ConfigError(f"BFF_API_UPSTREAMS: name {name!r} must be lowercase letters, digits, - or _")
        parts = urlsplit(base) if isinstance(base, str) else None
        if not parts or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(f"BFF_API_UPSTREAMS: {name!r} must map to an absolute http(s) URL without query")
    return {name: base.rstrip("/") for name, base in upstreams.items()}


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


def _number(environ: Mapping[str, str], name: str, default: float, whole: bool, maximum: float | None = None):
    """A positive number of seconds: whole for lifetimes, fractional (and capped) for timeouts."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number of seconds" if whole else "a number of seconds"
        raise ConfigError(f"{name}: must be {kind}, got {raw!r}") from None
    if value <= 0 or (maximum is not None and value > maximum):
        limit = f" and at most {maximum:g}" if maximum is not None else ""
        raise ConfigError(f"{name}: must be positive{limit}, got {raw}")
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
