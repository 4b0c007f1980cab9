"""Ending sessions: the one revocation path, the SPA's logout, and the IdP's back-channel logout.

Logout, back-channel logout, refused refreshes and `flask sessions revoke` all call
`end_sessions`, so ending a session means the same thing everywhere: the records and their index
entries are gone from Redis first, then each refresh token is revoked at the IdP (RFC 7009), in
parallel, each call bounded by the revocation timeout and best effort: an unreachable IdP never
keeps a session alive here.
"""

from __future__ import annotations

import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import BffError
from .jwt_checks import CLOCK_SKEW, LOGOUT_TOKEN_MAX_AGE
from .keyspace import SessionRef
from .oidc import Provider
from .session_interface import BffSession
from .sessions import EndedSession, SessionFilter, SessionStore, now

log = logging.getLogger(__name__)

MAX_PARALLEL_REVOCATIONS = 8


def end_sessions(store: SessionStore, provider: Provider, flt: SessionFilter) -> list[EndedSession]:
    ended = store.remove(flt)
    refresh_tokens = [s.refresh_token for s in ended if s.refresh_token]
    if len(refresh_tokens) == 1:
        provider.revoke_refresh_token(refresh_tokens[0])
    elif refresh_tokens:
        with ThreadPoolExecutor(min(MAX_PARALLEL_REVOCATIONS, len(refresh_tokens))) as pool:
            list(pool.map(provider.revoke_refresh_token, refresh_tokens))
    for session in ended:
        log.info("session %s ended", session.handle)
    return ended


def end_browser_session(store: SessionStore, provider: Provider, session: BffSession) -> None:
    """End the browser's current session, if it has one, and empty it (its cookie then goes)."""
    if session.signed_in and session.ref is not None:
        end_sessions(store, provider, SessionFilter(session=session.ref))
        session.ended = True  # so saving the emptied session deletes nothing a second time
    session.clear()


def log_out(
    store: SessionStore,
    provider: Provider,
    session: BffSession,
    *,
    mode: str,
    post_logout_redirect_uri: str,
    has_cookie: bool,
) -> str:
    """The SPA's logout: the IdP's logout URL, computed while the session's id token is still at
    hand, then this browser's session ended (and a stale cookie deleted; a browser that sent none
    gets no Set-Cookie). Returns the URL the browser goes to next."""
    url = logout_url(
        store, provider, session.ref, dict(session), mode=mode, post_logout_redirect_uri=post_logout_redirect_uri
    )
    if session.signed_in or has_cookie:
        end_browser_session(store, provider, session)
    return url


def logout_url(
    store: SessionStore,
    provider: Provider,
    ref: SessionRef | None,
    record: dict[str, Any],
    *,
    mode: str,
    post_logout_redirect_uri: str,
) -> str:
    """Where the browser goes to end the IdP session: RP-Initiated Logout with a fresh `state`.

    Without a live session (never signed in, idled out, ended elsewhere) the IdP session may still
    be alive, and ending it is the point: the same URL, in its client_id form. So too in
    `id_token_hint` mode when no readable id token is held (a retired encryption key)."""
    id_token_hint = None
    if mode == "id_token_hint" and ref is not None and record.get("sub"):
        tokens = store.open_tokens(ref, record)
        id_token_hint = tokens.get("id_token") if tokens else None
    return provider.logout_url(
        post_logout_redirect_uri=post_logout_redirect_uri,
        state=secrets.token_urlsafe(16),
        id_token_hint=id_token_hint,
    )


def accept_logout_token(store: SessionStore, provider: Provider, logout_token: str | None) -> list[EndedSession]:
    """OpenID Connect Back-Channel Logout: validate, refuse a replayed `jti`, end every session of
    the token's `sid` (or of its `sub` when there is none). Raises `BffError` (400) on any failure."""
    if not logout_token:
        raise BffError(400, "invalid_request", "The request carries no logout_token.")
    claims = provider.verify_logout_token(logout_token)
    ttl = int(claims.get("exp", now() + LOGOUT_TOKEN_MAX_AGE)) - now() + CLOCK_SKEW
    if not store.remember_logout_token(claims["iss"], str(claims["jti"]), ttl):
        raise BffError(400, "invalid_request", "This logout token was already used (replayed jti).")
    return end_sessions(store, provider, SessionFilter(sid=claims.get("sid"), sub=claims.get("sub")))
