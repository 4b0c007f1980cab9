"""The /bff endpoints the SPA calls: login, callback, user, logout. Views only translate HTTP."""

from __future__ import annotations

import secrets
import time

from flask import Blueprint, Response, after_this_request, jsonify, redirect, request, session

from . import extensions, metrics
from .errors import BffError
from .jwt_checks import CLOCK_SKEW, LOGOUT_TOKEN_MAX_AGE
from .login import LOGIN_TTL, attempt_cookie_name, begin_login, complete_login, parse_prompt, public_claims
from .security import csrf_protected, normalize_return_url
from .sessions import SessionFilter, SessionRef, new_session_id, now
from .tokens import end_sessions

bp = Blueprint("bff", __name__, url_prefix="/bff")


def _end_this_session() -> None:
    """End the browser's current session (if any) through the one revocation path."""
    ref = SessionRef.from_session_id(session.sid)
    if session.get("sub") and ref:
        end_sessions(extensions.store(), extensions.provider(), SessionFilter(session=ref))
        session.ended = True  # so saving the emptied session does not delete it a second time
    session.clear()


@bp.after_request
def never_cache(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/login")
def login() -> Response:
    """Send the browser to the IdP; `returnUrl` must be a path on this site."""
    return_url = normalize_return_url(request.args.get("returnUrl", "/"))
    if return_url is None:
        raise BffError(400, "invalid_return_url", "returnUrl must be a path on this site, such as /orders.")
    prompt = parse_prompt(request.args.get("prompt"))
    start = begin_login(
        extensions.provider(),
        extensions.login_sealer(),
        return_url=return_url,
        prompt=prompt,
        session_cookie=extensions.settings().cookie_name,
        cookies=request.cookies,
        now_ms=time.time_ns() // 1_000_000,
    )
    response = redirect(start.authorization_url, code=302)
    for name in start.dropped_cookies:
        _set_cookie(response, name, "", max_age=0)
    _set_cookie(response, start.cookie_name, start.cookie_value, max_age=LOGIN_TTL)
    return response


@bp.get("/callback")
def callback() -> Response:
    """Finish sign-in: a fresh session id, tokens stored server-side, back to the return URL."""
    settings = extensions.settings()
    state = request.args.get("state")
    if state:

        @after_this_request
        def end_attempt(response: Response) -> Response:
            """Whatever the outcome, this attempt is over: its cookie goes."""
            _set_cookie(response, attempt_cookie_name(settings.cookie_name, state), "", max_age=0)
            return response

    with metrics.outcome(metrics.LOGINS):
        signed_in = complete_login(
            extensions.provider(),
            extensions.login_sealer(),
            params=request.args,
            cookies=request.cookies,
            session_cookie=settings.cookie_name,
            fetch_userinfo=settings.fetch_userinfo,
            now_ms=time.time_ns() // 1_000_000,
        )
    # Never reuse the pre-login id: a previous session in this browser ends, a new id is drawn.
    _end_this_session()
    session.sid = new_session_id(signed_in.claims["sub"])
    session.permanent = True
    session.update(
        extensions.store().new_record(
            session.sid,
            claims=signed_in.claims,
            tokens=signed_in.tokens,
            max_lifetime=settings.session_max_lifetime,
            user_agent=request.user_agent.string,
            client_ip=request.remote_addr or "",
        )
    )
    return redirect(signed_in.return_url, code=302)


@bp.get("/user")
@csrf_protected
def user() -> Response:
    """Who is signed in: claims and session expiry, never a token."""
    if not session.get("sub"):
        raise BffError(401, "unauthenticated", "No one is signed in.")
    idle_expiry = now() + extensions.settings().session_idle_timeout
    return jsonify(
        sub=session["sub"],
        claims=public_claims(session["claims"]),
        session={"expires_at": min(session["expires_at"], idle_expiry)},
    )


@bp.post("/logout")
@csrf_protected
def logout() -> Response:
    """End this session here and at the IdP; the SPA then navigates to `logout_url`.

    Without a live session (never signed in, idled out, ended elsewhere) the IdP session may
    still be alive, and ending it is the point: the same end-session URL, in its client_id form."""
    settings = extensions.settings()
    signed_in = bool(session.get("sub"))
    id_token_hint = None
    if signed_in and settings.logout_mode == "id_token_hint":
        ref = SessionRef.from_session_id(session.sid)
        tokens = extensions.store().open_tokens(ref, session) if ref else None
        id_token_hint = tokens.get("id_token") if tokens else None  # unreadable: the client_id form
    logout_url = extensions.provider().logout_url(
        post_logout_redirect_uri=settings.post_logout_redirect_uri,
        state=secrets.token_urlsafe(16),
        id_token_hint=id_token_hint,
    )
    if signed_in:
        _end_this_session()
        metrics.LOGOUTS.inc()
    elif settings.cookie_name in request.cookies:
        session.clear()  # a stale cookie goes too
    return jsonify(logout_url=logout_url)


@bp.post("/backchannel-logout")
def backchannel_logout() -> Response:
    """OpenID Connect Back-Channel Logout: the IdP ends our sessions for a sid or a user."""
    with metrics.outcome(metrics.BACKCHANNEL_LOGOUTS):
        logout_token = request.form.get("logout_token")
        if not logout_token:
            raise BffError(400, "invalid_request", "The request carries no logout_token.")
        provider = extensions.provider()
        claims = provider.verify_logout_token(logout_token)
        ttl = int(claims.get("exp", now() + LOGOUT_TOKEN_MAX_AGE)) - now() + CLOCK_SKEW
        if not extensions.store().remember_logout_token(claims["iss"], str(claims["jti"]), ttl):
            raise BffError(400, "invalid_request", "This logout token was already used (replayed jti).")
    ended = end_sessions(extensions.store(), provider, SessionFilter(sid=claims.get("sid"), sub=claims.get("sub")))
    metrics.SESSIONS_ENDED_BY_IDP.inc(len(ended))
    return Response(status=200)


def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    """Login-attempt cookies carry the same attributes as the session cookie."""
    https = extensions.settings().https
    response.set_cookie(name, value, max_age=max_age, path="/", secure=https, httponly=True, samesite="Lax")
