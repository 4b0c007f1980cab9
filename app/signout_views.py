"""The /bff endpoints of signing out: the SPA's logout, the IdP's return from it (and the check
that its session really ended), the `form_post` page, and the IdP's back-channel logout.
Views only translate HTTP: each makes one call into signout.py or login.py."""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, jsonify, redirect, request
from werkzeug.wrappers import Response as HttpResponse

from . import extensions, metrics, signout
from .bff import finish_signout, never_cache, set_bff_cookie, start_attempt
from .errors import BffError
from .login import begin_login
from .security import csrf_protected
from .session_interface import current_session
from .sessions import now_ms

bp = Blueprint("signout", __name__, url_prefix="/bff")


bp.after_request(never_cache)


@bp.post("/logout")
@csrf_protected
def logout() -> Response:
    """End this session here and at the IdP; the SPA then navigates to `logout_url`. A short-lived
    cookie remembers the `state` sent, so /bff/logged-out knows the IdP's return is this logout's."""
    settings, session = extensions.settings(), current_session()
    if session.signed_in:
        metrics.LOGOUTS.inc()
    done = signout.log_out(
        extensions.store(),
        extensions.provider(),
        session,
        mode=settings.logout_mode,
        post_logout_redirect_uri=settings.post_logout_redirect_uri,
        has_cookie=settings.cookie_name in request.cookies,
    )
    response = jsonify(logout_url=done.url)
    value = signout.seal_logout_state(extensions.cookie_sealer(), settings.logout_cookie_name, done.state, now_ms())
    set_bff_cookie(response, settings.logout_cookie_name, value, max_age=signout.LOGOUT_COOKIE_TTL)
    return response


@bp.get("/logged-out")
def logged_out() -> HttpResponse:
    """The IdP's return from a logout: if it is this browser's, ask the IdP (prompt=none, top
    level) whether it still has a session; the probe's callback says `complete`,
    `idp_session_alive` or `unconfirmed`, and lands on BFF_POST_LOGOUT_RETURN_URL."""
    settings = extensions.settings()
    ours = signout.logout_state_matches(
        extensions.cookie_sealer(),
        settings.logout_cookie_name,
        request.cookies.get(settings.logout_cookie_name, ""),
        request.args.get("state", ""),
        now_ms(),
    )
    if not ours:  # someone else's return, or none: this browser's pending logout (if any) stays
        return finish_signout("unconfirmed", settings.post_logout_return_url)
    if not settings.logout_verify:
        response = finish_signout("unconfirmed", settings.post_logout_return_url)
    else:
        start = begin_login(
            extensions.provider(),
            extensions.cookie_sealer(),
            return_url=settings.post_logout_return_url,
            prompt="none",
            cookie_prefix=settings.attempt_cookie_prefix,
            cookies=request.cookies,
            now_ms=now_ms(),
            probe=True,
        )
        response = start_attempt(redirect(start.authorization_url, code=302), start)
    set_bff_cookie(response, settings.logout_cookie_name, "", max_age=0)
    return response


@bp.get("/logout/continue")
def logout_continue() -> Response:
    """`form_post` mode: the one-time page that POSTs the id token to the IdP's end-session
    endpoint. Served only to a top-level navigation, so script on this origin cannot fetch it."""
    mode, dest = request.headers.get("Sec-Fetch-Mode"), request.headers.get("Sec-Fetch-Dest")
    if (mode is not None and mode != "navigate") or (dest is not None and dest != "document"):
        raise BffError(400, "not_a_navigation", "This page can only be opened by navigating to it.")
    settings = extensions.settings()
    cookie = request.cookies.get(settings.logout_cookie_name, "")
    if not cookie:  # not the browser that logged out: refused before the one-time link is spent
        raise BffError(400, "invalid_request", "This sign-out link belongs to another browser.")
    values = extensions.store().take_logout_continuation(request.args.get("handle", ""))
    endpoint = extensions.provider().end_session_endpoint()

    def ours(state: str) -> bool:
        return signout.logout_state_matches(
            extensions.cookie_sealer(), settings.logout_cookie_name, cookie, state, now_ms()
        )

    if values is None or endpoint is None or not signout.continuation_for_this_browser(values, ours):
        raise BffError(400, "invalid_request", "This sign-out link has expired, was already used or is not yours.")
    nonce = secrets.token_urlsafe(16)
    response = Response(signout.continuation_page(endpoint, values, settings.client_id, nonce), mimetype="text/html")
    response.headers["Content-Security-Policy"] = signout.continuation_csp(endpoint, nonce)
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    return response


@bp.post("/backchannel-logout")
def backchannel_logout() -> Response:
    """OpenID Connect Back-Channel Logout: the IdP ends our sessions for a sid or a user."""
    with metrics.outcome(metrics.BACKCHANNEL_LOGOUTS):
        ended = signout.accept_logout_token(extensions.store(), extensions.provider(), request.form.get("logout_token"))
    metrics.SESSIONS_ENDED_BY_IDP.inc(len(ended))
    return Response(status=200)
