"""The /bff endpoints the SPA calls: login, callback, user, logout, and the IdP's back-channel
logout. Views only translate HTTP: each makes one call into login.py or signout.py."""

from __future__ import annotations

import time

from flask import Blueprint, Response, after_this_request, jsonify, redirect, request
from werkzeug.wrappers import Response as HttpResponse

from . import extensions, metrics, signout
from .errors import BffError
from .keyspace import new_session_id
from .login import LOGIN_TTL, attempt_cookie_name, begin_login, complete_login, parse_prompt, public_claims
from .security import csrf_protected, normalize_return_url
from .session_interface import current_session
from .sessions import now

bp = Blueprint("bff", __name__, url_prefix="/bff")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@bp.after_request
def never_cache(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/login")
def login() -> HttpResponse:
    """Send the browser to the IdP; `returnUrl` must be a path on this site."""
    return_url = normalize_return_url(request.args.get("returnUrl", "/"))
    if return_url is None:
        raise BffError(400, "invalid_return_url", "returnUrl must be a path on this site, such as /orders.")
    start = begin_login(
        extensions.provider(),
        extensions.login_sealer(),
        return_url=return_url,
        prompt=parse_prompt(request.args.get("prompt")),
        cookie_prefix=extensions.settings().attempt_cookie_prefix,
        cookies=request.cookies,
        now_ms=_now_ms(),
    )
    response = redirect(start.authorization_url, code=302)
    for name in start.dropped_cookies:
        _set_attempt_cookie(response, name, "", max_age=0)
    _set_attempt_cookie(response, start.cookie_name, start.cookie_value, max_age=LOGIN_TTL)
    return response


@bp.get("/callback")
def callback() -> HttpResponse:
    """Finish sign-in: a fresh session id, tokens stored server-side, back to the return URL."""
    settings = extensions.settings()
    state = request.args.get("state")
    if state:

        @after_this_request
        def end_attempt(response: Response) -> Response:
            """Whatever the outcome, this attempt is over: its cookie goes."""
            _set_attempt_cookie(response, attempt_cookie_name(settings.attempt_cookie_prefix, state), "", max_age=0)
            return response

    with metrics.outcome(metrics.LOGINS):
        signed_in = complete_login(
            extensions.provider(),
            extensions.login_sealer(),
            params=request.args,
            cookies=request.cookies,
            cookie_prefix=settings.attempt_cookie_prefix,
            fetch_userinfo=settings.fetch_userinfo,
            now_ms=_now_ms(),
        )
    # Never reuse the pre-login id: a previous session in this browser ends, a new id is drawn.
    session = current_session()
    signout.end_browser_session(extensions.store(), extensions.provider(), session)
    session.sid = new_session_id(signed_in.claims["sub"])
    session.permanent = True
    session.update(
        extensions.store().new_record(
            session.sid,
            claims=signed_in.claims,
            tokens=signed_in.tokens,
            max_lifetime=settings.session_max_lifetime,
            user_agent=request.user_agent.string or "",
            client_ip=request.remote_addr or "",
        )
    )
    return redirect(signed_in.return_url, code=302)


@bp.get("/user")
@csrf_protected
def user() -> Response:
    """Who is signed in: claims and session expiry, never a token."""
    session = current_session()
    if not session.signed_in:
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
    """End this session here and at the IdP; the SPA then navigates to `logout_url`."""
    settings, session = extensions.settings(), current_session()
    if session.signed_in:
        metrics.LOGOUTS.inc()
    logout_url = signout.log_out(
        extensions.store(),
        extensions.provider(),
        session,
        mode=settings.logout_mode,
        post_logout_redirect_uri=settings.post_logout_redirect_uri,
        has_cookie=settings.cookie_name in request.cookies,
    )
    return jsonify(logout_url=logout_url)


@bp.post("/backchannel-logout")
def backchannel_logout() -> Response:
    """OpenID Connect Back-Channel Logout: the IdP ends our sessions for a sid or a user."""
    with metrics.outcome(metrics.BACKCHANNEL_LOGOUTS):
        ended = signout.accept_logout_token(extensions.store(), extensions.provider(), request.form.get("logout_token"))
    metrics.SESSIONS_ENDED_BY_IDP.inc(len(ended))
    return Response(status=200)


def _set_attempt_cookie(response: HttpResponse, name: str, value: str, max_age: int) -> None:
    """Sign-in attempt cookies: HttpOnly, Lax, Secure over https, and only for /bff/ (the login
    and callback endpoints), so that even a pile of them never weighs on the SPA's other requests."""
    https = extensions.settings().https
    response.set_cookie(name, value, max_age=max_age, path="/bff/", secure=https, httponly=True, samesite="Lax")
