"""OpenID Connect backend-for-frontend: the SPA signs in and out, tokens stay in Redis."""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import (
    authz,
    bff,
    cli,
    extensions,
    json_responses,
    ops,
    proxy,
    request_cycle,
    security,
    session_interface,
    signout_views,
    spa,
)
from .client_tokens import ClientTokens
from .config import Settings, load_settings
from .crypto import CookieSealer, TokenCipher
from .extensions import Services
from .oidc import Provider
from .redis_client import make_redis
from .sessions import SessionStore

log = logging.getLogger(__name__)


def sign_in_resources(settings: Settings) -> tuple[str, ...]:
    """What the sign-in asks for (RFC 8707): its own resource, then every other resource a user
    token is wanted for, so that a refresh can obtain each (refresh.py); none without the first."""
    if settings.resource is None:
        return ()
    others = {u.resource for u in settings.api_upstreams.values() if u.user_token and u.resource}
    return (settings.resource, *sorted(others - {settings.resource}))


def build_services(settings: Settings) -> Services:
    """Every shared object, once: the IdP client, the Redis client, the store, the cookie sealer."""
    client = make_redis(settings.redis, settings.redis_timeout)
    cipher = TokenCipher(list(settings.token_encryption_keys))
    provider = Provider(
        issuer=settings.issuer,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        scopes=settings.scopes,
        redirect_uri=settings.redirect_uri,
        timeout=settings.idp_timeout,
        revocation_timeout=settings.revocation_timeout,
        client_keys=settings.client_keys,
        client_auth=settings.client_auth,
        assertion_audience=settings.assertion_audience,
        par=settings.par,
        resources=sign_in_resources(settings),
    )
    return Services(
        settings=settings,
        provider=provider,
        redis=client,
        store=SessionStore(client, cipher, settings.session_idle_timeout),
        cookie_sealer=CookieSealer(settings.secret_key, "bff sealed cookies v1"),
        client_tokens=ClientTokens(client, cipher, provider, settings.refresh_skew),
    )


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app from `settings`, or from the environment (raises `ConfigError`)."""
    settings = settings or load_settings(os.environ)
    if settings.secret_key_generated:
        log.warning("BFF_SECRET_KEY is not set: generated one for this process (development only)")
    if settings.token_encryption_key_generated:
        log.warning("BFF_TOKEN_ENCRYPTION_KEY is not set: generated one for this process (development only)")

    app = Flask(__name__, static_folder=None)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME=settings.cookie_name,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.https,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN=None,
        # Read-only requests must not rewrite the session; GETEX slides the idle expiry instead.
        SESSION_REFRESH_EACH_REQUEST=False,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.session_max_lifetime),
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    # No redirect of Werkzeug's own (merged slashes, added trailing slashes): it would be built
    # from the Host header the client sent. `/api/x//y` is then refused by the proxy's path rules.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    services = build_services(settings)
    extensions.install(app, services)
    json_responses.init_app(app)
    session_interface.init_app(app, services.store)
    cli.init_app(app)
    security.init_app(app)
    request_cycle.init_app(app, https=settings.https)
    ops.init_app(app)
    app.register_blueprint(bff.bp)
    app.register_blueprint(signout_views.bp)
    app.register_blueprint(proxy.bp)
    app.register_blueprint(authz.bp)
    if settings.serve_spa:
        app.register_blueprint(spa.bp)

    if settings.trusted_proxies:
        # Client address, scheme and host as the reverse proxies in front of us saw them.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    return app
