"""The app's settings from the environment, validated once at start (gunicorn's own are in
server_settings.py). A bad value raises `ConfigError` naming the variable. Defaults are written
once, on the dataclass."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from . import env
from .client_auth import ASSERTION_AUDIENCES, METHODS, ClientKey, parse_client_keys
from .crypto import generate_key, parse_encryption_keys
from .env import ConfigError
from .login import normalize_prompt
from .redis_client import RedisTarget, parse_redis_url
from .security import normalize_return_url
from .upstreams import Upstream, absolute_uri, load_upstreams

__all__ = ["ConfigError", "Settings", "load_settings"]

LOGOUT_MODES = ("client_id", "id_token_hint", "form_post")
PAR_MODES = ("auto", "always", "never")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
AUTHZ_SECRET = re.compile(r"[A-Za-z0-9_-]{32,}")


@dataclass(frozen=True)
class Settings:
    public_url: str
    issuer: str
    client_id: str
    client_secret: str = ""  # empty: the client authenticates with client_keys (private_key_jwt)
    client_keys: tuple[ClientKey, ...] = ()  # BFF_OIDC_CLIENT_KEY: the first signs, all are published
    client_auth: str = "auto"  # one of client_auth.METHODS
    assertion_audience: str = "token_endpoint"  # or "issuer"
    par: str = "auto"  # one of PAR_MODES
    resource: str | None = None  # BFF_OIDC_RESOURCE: the sign-in token's RFC 8707 resource
    scopes: str = "openid profile email offline_access"
    redis: RedisTarget = field(default_factory=lambda: parse_redis_url(DEFAULT_REDIS_URL))
    secret_key: str = ""
    secret_key_generated: bool = False
    token_encryption_keys: tuple[bytes, ...] = ()
    token_encryption_key_generated: bool = False
    session_idle_timeout: int = 8 * 3600
    session_max_lifetime: int = 24 * 3600
    post_logout_redirect_uri: str = ""  # default: public URL + /bff/logged-out
    logout_mode: str = "client_id"
    logout_verify: bool = True
    post_logout_return_url: str = "/"
    oidc_prompt: str | None = None
    fetch_userinfo: bool = True
    serve_spa: bool = True
    idp_timeout: float = 5.0
    revocation_timeout: float = 2.0
    api_upstreams: dict[str, Upstream] = field(default_factory=dict)
    api_timeout: float = 30.0
    api_max_body: int = 10 * 1024 * 1024
    refresh_skew: int = 30
    trusted_proxies: int = 0
    authz_secret: str = ""  # empty: GET /bff/authz is off (404)
    redis_timeout: float = 1.0
    log_level: str = "INFO"

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def redirect_uri(self) -> str:
        return self.public_url + "/bff/callback"

    @property
    def attempt_cookie_prefix(self) -> str:
        """Sign-in attempt cookies live under Path=/bff/ only (never sent to / or /api), which
        `__Host-` forbids; `__Secure-` still keeps them https-only and unsettable over http."""
        return "__Secure-bff-login-" if self.https else "bff-login-"

    @property
    def logout_cookie_name(self) -> str:
        """Binds the IdP's return from a logout to the browser that started it (Path=/bff/)."""
        return "__Secure-bff-logout" if self.https else "bff-logout"

    @property
    def cookie_name(self) -> str:
        """`__Host-` pins the cookie to this host and path / with Secure; browsers refuse it on http."""
        return "__Host-bff" if self.https else "bff"


DEFAULT: dict[str, Any] = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build `Settings` from environment variables, or raise `ConfigError` naming the culprit."""
    public_url = env.url(environ, "BFF_PUBLIC_URL", path_allowed=False).rstrip("/")
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
    idle = env.number(environ, "BFF_SESSION_IDLE_TIMEOUT", DEFAULT["session_idle_timeout"], whole=True)
    lifetime = env.number(environ, "BFF_SESSION_MAX_LIFETIME", DEFAULT["session_max_lifetime"], whole=True)
    if idle > lifetime:
        raise ConfigError("BFF_SESSION_IDLE_TIMEOUT: must not exceed BFF_SESSION_MAX_LIFETIME")

    scopes = " ".join(environ.get("BFF_OIDC_SCOPES", DEFAULT["scopes"]).split())
    if "openid" not in scopes.split():
        raise ConfigError("BFF_OIDC_SCOPES: must include 'openid'")

    client_secret, client_keys, client_auth = _client_credentials(environ)
    upstreams = load_upstreams(environ)
    resource = _sign_in_resource(environ, upstreams)
    name = "BFF_POST_LOGOUT_REDIRECT_URI"
    post_logout = env.url(environ, name) if environ.get(name, "").strip() else public_url + "/bff/logged-out"

    return Settings(
        public_url=public_url,
        issuer=env.url(environ, "BFF_OIDC_ISSUER"),
        client_id=env.required(environ, "BFF_OIDC_CLIENT_ID"),
        client_secret=client_secret,
        client_keys=client_keys,
        client_auth=client_auth,
        assertion_audience=env.choice(
            environ, "BFF_OIDC_CLIENT_ASSERTION_AUDIENCE", ASSERTION_AUDIENCES, DEFAULT["assertion_audience"]
        ),
        par=env.choice(environ, "BFF_OIDC_PAR", PAR_MODES, DEFAULT["par"]),
        resource=resource,
        scopes=scopes,
        redis=_redis(environ),
        secret_key=secret_key,
        secret_key_generated=generated,
        token_encryption_keys=encryption_keys,
        token_encryption_key_generated=keys_generated,
        session_idle_timeout=idle,
        session_max_lifetime=lifetime,
        post_logout_redirect_uri=post_logout,
        logout_mode=env.choice(environ, "BFF_LOGOUT_MODE", LOGOUT_MODES, DEFAULT["logout_mode"]),
        logout_verify=env.flag(environ, "BFF_LOGOUT_VERIFY", DEFAULT["logout_verify"]),
        post_logout_return_url=_local_path(environ, "BFF_POST_LOGOUT_RETURN_URL", DEFAULT["post_logout_return_url"]),
        oidc_prompt=_prompt(environ, "BFF_OIDC_PROMPT"),
        fetch_userinfo=env.flag(environ, "BFF_OIDC_USERINFO", DEFAULT["fetch_userinfo"]),
        serve_spa=env.flag(environ, "BFF_SERVE_SPA", DEFAULT["serve_spa"]),
        idp_timeout=env.number(environ, "BFF_IDP_TIMEOUT", DEFAULT["idp_timeout"], whole=False, maximum=60),
        revocation_timeout=env.number(
            environ, "BFF_REVOCATION_TIMEOUT", DEFAULT["revocation_timeout"], whole=False, maximum=60
        ),
        api_upstreams=upstreams,
        api_timeout=env.number(environ, "BFF_API_TIMEOUT", DEFAULT["api_timeout"], whole=False, maximum=3600),
        api_max_body=env.number(environ, "BFF_API_MAX_BODY", DEFAULT["api_max_body"], whole=True, unit="bytes"),
        refresh_skew=env.number(environ, "BFF_REFRESH_SKEW", DEFAULT["refresh_skew"], whole=True),
        trusted_proxies=env.count(environ, "BFF_TRUSTED_PROXIES"),
        authz_secret=_authz_secret(environ, "BFF_AUTHZ_SECRET"),
        redis_timeout=env.number(environ, "BFF_REDIS_TIMEOUT", DEFAULT["redis_timeout"], whole=False, maximum=30),
        log_level=env.choice(environ, "BFF_LOG_LEVEL", LOG_LEVELS, DEFAULT["log_level"], str.upper),
    )


def _sign_in_resource(environ: Mapping[str, str], upstreams: dict[str, Upstream]) -> str | None:
    """RFC 8707: the sign-in asks for every resource its user tokens will be for, so that a
    refresh may later obtain a token for each. The sign-in's own token then needs naming too,
    or an IdP would hand the sign-in a token for whichever resource it likes."""
    name = "BFF_OIDC_RESOURCE"
    resource = environ.get(name, "").strip() or None
    if resource is not None and not absolute_uri(resource):
        raise ConfigError(
            f"{name}: must be an absolute URI without fragment (RFC 8707), such as https://api.example.com"
        )
    others = sorted(n for n, u in upstreams.items() if u.user_token and u.resource and u.resource != resource)
    if others and resource is None:
        raise ConfigError(
            f"{name}: required when an upstream names a resource for user tokens ({', '.join(others)}): "
            "the sign-in token's own resource, asked for beside theirs"
        )
    return resource


def _client_credentials(environ: Mapping[str, str]) -> tuple[str, tuple[ClientKey, ...], str]:
    """The client secret and/or keys, and the method that will use them (DESIGN §10); what the
    IdP accepts is checked once its metadata is loaded (client_auth.choose_method)."""
    secret = environ.get("BFF_OIDC_CLIENT_SECRET", "").strip()
    method = env.choice(environ, "BFF_OIDC_CLIENT_AUTH", METHODS, DEFAULT["client_auth"])
    raw, name = environ.get("BFF_OIDC_CLIENT_KEY", "").strip(), "BFF_OIDC_CLIENT_KEY"
    path = environ.get("BFF_OIDC_CLIENT_KEY_FILE", "").strip()
    if raw and path:
        raise ConfigError("BFF_OIDC_CLIENT_KEY_FILE: set it or BFF_OIDC_CLIENT_KEY, not both")
    if path:
        name = "BFF_OIDC_CLIENT_KEY_FILE"
        try:
            with open(path, encoding="utf-8") as file:
                raw = file.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{name}: cannot be read ({type(error).__name__})") from None
    try:
        keys = parse_client_keys(raw) if raw else ()
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None
    if method == "private_key_jwt" and not keys:
        raise ConfigError("BFF_OIDC_CLIENT_KEY: required when BFF_OIDC_CLIENT_AUTH is private_key_jwt")
    if method.startswith("client_secret") and not secret:
        raise ConfigError(f"BFF_OIDC_CLIENT_SECRET: required when BFF_OIDC_CLIENT_AUTH is {method}")
    if not secret and not keys:
        raise ConfigError("BFF_OIDC_CLIENT_SECRET: required (or BFF_OIDC_CLIENT_KEY, for private_key_jwt)")
    return secret, keys, method


def _local_path(environ: Mapping[str, str], name: str, default: str) -> str:
    value = normalize_return_url(environ.get(name, "").strip() or default)
    if value is None:
        raise ConfigError(f"{name}: must be a path on this site, such as /signed-out")
    return value


def _authz_secret(environ: Mapping[str, str], name: str) -> str:
    """Shared by nginx and the BFF only: long enough not to be guessed, and written into nginx's
    configuration as it is, so only characters nginx reads literally (no `$`, quotes, `;`)."""
    secret = environ.get(name, "").strip()
    if secret and not AUTHZ_SECRET.fullmatch(secret):
        raise ConfigError(f"{name}: must be at least 32 characters among A-Z a-z 0-9 - _ (openssl rand -hex 32)")
    return secret


def _prompt(environ: Mapping[str, str], name: str) -> str | None:
    """A `prompt` for every sign-in (OIDC Core §3.1.2.1), `none` excepted: that one is for probes."""
    raw = environ.get(name, "").strip()
    try:
        prompt = normalize_prompt(raw)
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None
    if prompt and "none" in prompt.split():
        raise ConfigError(f"{name}: 'none' would make every sign-in fail for a new user")
    return prompt


def _redis(environ: Mapping[str, str]) -> RedisTarget:
    url = environ.get("BFF_REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    try:
        return parse_redis_url(url)
    except ValueError as error:
        raise ConfigError(f"BFF_REDIS_URL: {error}") from None


def _encryption_keys(environ: Mapping[str, str], https: bool) -> tuple[tuple[bytes, ...], bool]:
    raw = environ.get("BFF_TOKEN_ENCRYPTION_KEY", "").strip()
    if not raw:
        if https:
            raise ConfigError("BFF_TOKEN_ENCRYPTION_KEY: required when BFF_PUBLIC_URL is https (production)")
        return (base64.urlsafe_b64decode(generate_key() + "="),), True
    try:
        return tuple(parse_encryption_keys(raw)), False
    except ValueError as error:
        raise ConfigError(f"BFF_TOKEN_ENCRYPTION_KEY: {error}") from None
