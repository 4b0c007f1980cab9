"""The /bff endpoints of signing in: login, callback, user (sign-out's are in signout_views.py).
Views only translate HTTP: each makes one call into login.py or signout.py."""

from __future__ import annotations

from flask import Blueprint, Response, after_this_request, jsonify, redirect, request
from werkzeug.wrappers import Response as HttpResponse

from . import extensions, metrics, signout
from .client_auth import public_jwks
from .errors import BffError
from .keyspace import new_session_id
from .login import (
    LOGIN_TTL,
    LoginStart,
    ProbeResult,
    attempt_cookie_name,
    begin_login,
    complete_login,
    login_prompt,
    note_missing_refresh_token,
    parse_prompt,
    public_claims,
)
from .security import csrf_protected, normalize_return_url
from .session_interface import current_session
from .sessions import now, now_ms

bp = Blueprint("bff", __name__, url_prefix="/bff")


@bp.after_request
def never_cache(response: Response) -> Response:
    """Every /bff answer is about one browser (signout_views.py registers this hook too)."""
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/jwks")
def jwks() -> Response:
    """The public keys of BFF_OIDC_CLIENT_KEY, for IdPs that fetch a client's keys by URL
    (`jwks_uri`, RFC 7591): every configured key, so that during a rotation both verify.
    Not cached, so that the IdP sees a rotation at its next fetch. 404 without keys."""
    keys = extensions.settings().client_keys
    if not keys:
        raise BffError(404, "not_found", "No client keys are configured (BFF_OIDC_CLIENT_KEY).")
    return jsonify(public_jwks(keys))


@bp.get("/login")
def login() -> HttpResponse:
    """Send the browser to the IdP; `returnUrl` must be a path on this site."""
    return_url = normalize_return_url(request.args.get("returnUrl", "/"))
    if return_url is None:
        raise BffError(400, "invalid_return_url", "returnUrl must be a path on this site, such as /orders.")
    start = begin_login(
        extensions.provider(),
        extensions.cookie_sealer(),
        return_url=return_url,
        prompt=login_prompt(parse_prompt(request.args.get("prompt")), extensions.settings().oidc_prompt),
        cookie_prefix=extensions.settings().attempt_cookie_prefix,
        cookies=request.cookies,
        now_ms=now_ms(),
    )
    return start_attempt(redirect(start.authorization_url, code=302), start)


@bp.get("/callback")
def callback() -> HttpResponse:
    """Finish sign-in: a fresh session id, tokens stored server-side, back to the return URL."""
    settings = extensions.settings()
    state = request.args.get("state")
    if state:

        @after_this_request
        def end_attempt(response: Response) -> Response:
            """Whatever the outcome, this attempt is over: its cookie goes."""
            set_bff_cookie(response, attempt_cookie_name(settings.attempt_cookie_prefix, state), "", max_age=0)
            return response

    with metrics.failures(metrics.LOGINS):
        result = complete_login(
            extensions.provider(),
            extensions.cookie_sealer(),
            params=request.args,
            cookies=request.cookies,
            cookie_prefix=settings.attempt_cookie_prefix,
            fetch_userinfo=settings.fetch_userinfo,
            now_ms=now_ms(),
        )
    if isinstance(result, ProbeResult):  # a logout's check, not a sign-in: nothing is stored
        return finish_signout(result.outcome, result.return_url)
    metrics.LOGINS.labels("success").inc()
    signed_in = result
    if note_missing_refresh_token(settings.scopes, signed_in.tokens):
        metrics.LOGINS_WITHOUT_REFRESH_TOKEN.inc()
    # Never reuse the pre-login id: a previous session in this browser ends, a new id is drawn.
    session = current_session()
    signout.end_browser_session(extensions.store(), extensions.provider(), session, successor=signed_in.claims)
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
            resources=extensions.provider().sign_in_resources,
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


def start_attempt(response: HttpResponse, start: LoginStart) -> HttpResponse:
    """The attempt's cookie set, and older ones the browser should drop deleted."""
    for name in start.dropped_cookies:
        set_bff_cookie(response, name, "", max_age=0)
    set_bff_cookie(response, start.cookie_name, start.cookie_value, max_age=LOGIN_TTL)
    return response


def set_bff_cookie(response: HttpResponse, name: str, value: str, max_age: int) -> None:
    """The BFF's short-lived cookies (sign-in attempts, logout state): HttpOnly, Lax, Secure over
    https, and only for /bff/, so that they never weigh on the SPA's other requests."""
    https = extensions.settings().https
    response.set_cookie(name, value, max_age=max_age, path="/bff/", secure=https, httponly=True, samesite="Lax")


def finish_signout(outcome: str, return_url: str) -> HttpResponse:
    """The end of a logout: back to the app, told whether the IdP session is known to be gone."""
    metrics.SIGNOUTS.labels(outcome).inc()
    return redirect(signout.signed_out_url(return_url, outcome, extensions.settings().issuer), code=302)
