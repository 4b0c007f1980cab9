"""The /bff endpoints the SPA calls: login, callback, user, logout. Views only translate HTTP."""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, current_app, jsonify, redirect, request, session

from .errors import BffError
from .login import begin_login, complete_login, parse_prompt, public_claims
from .oidc import Provider
from .security import csrf_protected, is_local_return_url
from .sessions import LOGIN_TTL, LoginAttempts, now, session_record

bp = Blueprint("bff", __name__, url_prefix="/bff")


def _provider() -> Provider:
    return current_app.extensions["bff.provider"]


def _attempts() -> LoginAttempts:
    return current_app.extensions["bff.login_attempts"]


def _settings():
    return current_app.extensions["bff.settings"]


@bp.after_request
def never_cache(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/login")
def login() -> Response:
    """Send the browser to the IdP; `returnUrl` must be a path on this site."""
    return_url = request.args.get("returnUrl", "/")
    if not is_local_return_url(return_url):
        raise BffError(400, "invalid_return_url", "returnUrl must be a path on this site, such as /orders.")
    prompt = parse_prompt(request.args.get("prompt"))
    start = begin_login(
        _provider(), _attempts(), return_url=return_url, prompt=prompt, session_cookie=_settings().cookie_name
    )
    response = redirect(start.authorization_url, code=302)
    _set_cookie(response, start.binding_cookie, start.binding_value, max_age=LOGIN_TTL)
    return response


@bp.get("/callback")
def callback() -> Response:
    """Finish sign-in: a fresh session id, tokens stored server-side, back to the return URL."""
    settings = _settings()
    signed_in = complete_login(
        _provider(),
        _attempts(),
        params=request.args,
        cookies=request.cookies,
        session_cookie=settings.cookie_name,
        fetch_userinfo=settings.fetch_userinfo,
    )
    current_app.session_interface.regenerate(session)
    session.clear()
    session.permanent = True
    session.update(
        session_record(
            claims=signed_in.claims,
            tokens=signed_in.tokens,
            max_lifetime=settings.session_max_lifetime,
            user_agent=request.user_agent.string,
            client_ip=request.remote_addr or "",
        )
    )
    response = redirect(signed_in.return_url, code=302)
    _set_cookie(response, signed_in.binding_cookie, "", max_age=0)
    return response


@bp.get("/user")
@csrf_protected
def user() -> Response:
    """Who is signed in: claims and session expiry, never a token."""
    if not session.get("sub"):
        raise BffError(401, "unauthenticated", "No one is signed in.")
    idle_expiry = now() + _settings().session_idle_timeout
    return jsonify(
        sub=session["sub"],
        claims=public_claims(session["claims"]),
        session={"expires_at": min(session["expires_at"], idle_expiry)},
    )


@bp.post("/logout")
@csrf_protected
def logout() -> Response:
    """End this session here and at the IdP; the SPA then navigates to `logout_url`."""
    settings = _settings()
    if not session.get("sub"):
        return jsonify(logout_url=settings.post_logout_redirect_uri)
    provider = _provider()
    tokens = session.get("tokens") or {}
    logout_url = provider.logout_url(
        post_logout_redirect_uri=settings.post_logout_redirect_uri,
        state=secrets.token_urlsafe(16),
        id_token_hint=tokens.get("id_token") if settings.logout_mode == "id_token_hint" else None,
    )
    session.clear()
    if tokens.get("refresh_token"):
        provider.revoke_refresh_token(tokens["refresh_token"])
    return jsonify(logout_url=logout_url)


def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    """Login-binding cookies carry the same attributes as the session cookie."""
    https = _settings().https
    response.set_cookie(name, value, max_age=max_age, path="/", secure=https, httponly=True, samesite="Lax")
