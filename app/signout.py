"""Ending sessions: the one revocation path, the SPA's logout (and finding out whether the IdP
session really ended), and the IdP's back-channel logout.

Logout, back-channel logout, refused refreshes and `flask sessions revoke` all call
`end_sessions`, so ending a session means the same thing everywhere: the records and their index
entries are gone from Redis first, then each refresh token is revoked at the IdP (RFC 7009), in
parallel, each call bounded by the revocation timeout and best effort: an unreachable IdP never
keeps a session alive here.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit

from .crypto import CookieSealer
from .errors import BffError
from .idp_requests import add_query
from .jwt_checks import CLOCK_SKEW, LOGOUT_TOKEN_MAX_AGE
from .keyspace import digest
from .oidc import Provider
from .session_interface import BffSession
from .sessions import EndedSession, SessionFilter, SessionStore, now

log = logging.getLogger(__name__)

MAX_PARALLEL_REVOCATIONS = 8
LOGOUT_COOKIE_TTL = 600  # seconds a person has to confirm the sign-out at the IdP and come back
CONTINUATION_TTL = 60  # seconds a form_post logout page may be opened, once
OUTCOMES = ("complete", "idp_session_alive", "unconfirmed")


@dataclass(frozen=True)
class LogOut:
    url: str  # where the browser goes next
    state: str  # what the IdP must send back to /bff/logged-out


def end_sessions(
    store: SessionStore, provider: Provider, flt: SessionFilter, *, revoke: bool = True
) -> list[EndedSession]:
    ended = store.remove(flt)
    refresh_tokens = [s.refresh_token for s in ended if s.refresh_token and revoke]
    if len(refresh_tokens) == 1:
        provider.revoke_refresh_token(refresh_tokens[0])
    elif refresh_tokens:
        with ThreadPoolExecutor(min(MAX_PARALLEL_REVOCATIONS, len(refresh_tokens))) as pool:
            list(pool.map(provider.revoke_refresh_token, refresh_tokens))
    for session in ended:
        log.info("session %s ended", session.handle)
    return ended


def end_browser_session(
    store: SessionStore, provider: Provider, session: BffSession, successor: dict[str, Any] | None = None
) -> None:
    """End the browser's current session, if it has one, and empty it (its cookie then goes).

    `successor`: the claims of the sign-in replacing it. When that is the same user in the same
    IdP session (or the IdP names no session), the old refresh token is deleted, not revoked:
    IdPs revoke the whole grant with it (node oidc-provider's revokeGrantPolicy, Keycloak's
    client session), and the new sign-in was issued from that same grant, so revoking would end
    the new session at its first refresh."""
    if session.signed_in and session.ref is not None:
        same_grant = successor is not None and _same_grant(dict(session), successor)
        end_sessions(store, provider, SessionFilter(session=session.ref), revoke=not same_grant)
        session.ended = True  # so saving the emptied session deletes nothing a second time
    session.clear()


def _same_grant(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """The same user in the same IdP session: the same `sid` when both have one; otherwise the
    same authentication (`auth_time`) when both say, and when neither says, assumed so (revoking
    a grant the new session shares would end it; an old token left alive dies with its grant)."""
    if old.get("sub") != new.get("sub"):
        return False
    if old.get("sid") is not None and new.get("sid") is not None:
        return bool(old["sid"] == new["sid"])
    old_auth, new_auth = (old.get("claims") or {}).get("auth_time"), new.get("auth_time")
    return old_auth is None or new_auth is None or old_auth == new_auth


def log_out(
    store: SessionStore,
    provider: Provider,
    session: BffSession,
    *,
    mode: str,
    post_logout_redirect_uri: str,
    has_cookie: bool,
) -> LogOut:
    """The SPA's logout: the IdP's logout URL with a fresh `state`, computed while the session's id
    token is still at hand, then this browser's session ended (and a stale cookie deleted; a
    browser that sent none gets no Set-Cookie).

    Without a live session (never signed in, idled out, ended elsewhere) the IdP session may still
    be alive, and ending it is the point: the same URL, in its client_id form. So too when no
    readable id token is held (a retired encryption key). In `form_post` mode the URL is a
    one-time page of ours that POSTs the id token, so that it appears in no URL."""
    state = secrets.token_urlsafe(16)
    id_token = _id_token(store, session) if mode in ("id_token_hint", "form_post") else None
    if mode == "form_post" and id_token and provider.end_session_endpoint():
        handle = secrets.token_urlsafe(32)
        values = {"id_token_hint": id_token, "state": state, "post_logout_redirect_uri": post_logout_redirect_uri}
        store.save_logout_continuation(handle, values, CONTINUATION_TTL)
        url = "/bff/logout/continue?" + urlencode({"handle": handle})
    else:
        hint = id_token if mode == "id_token_hint" else None
        url = provider.logout_url(post_logout_redirect_uri=post_logout_redirect_uri, state=state, id_token_hint=hint)
    if session.signed_in or has_cookie:
        end_browser_session(store, provider, session)
    return LogOut(url, state)


def _id_token(store: SessionStore, session: BffSession) -> str | None:
    if not session.signed_in or session.ref is None:
        return None
    tokens = store.open_tokens(session.ref, dict(session))
    return tokens.get("id_token") if tokens else None


def seal_logout_state(sealer: CookieSealer, cookie_name: str, state: str, now_ms: int) -> str:
    """The logout cookie's value: binds the IdP's return to the browser that started the logout."""
    return sealer.seal(json.dumps({"state": digest(state), "at": now_ms}).encode(), cookie_name)


def logout_state_matches(sealer: CookieSealer, cookie_name: str, value: str, state: str, now_ms: int) -> bool:
    plaintext = sealer.open(value, cookie_name) if value and state else None
    if plaintext is None:
        return False
    try:
        sealed = json.loads(plaintext)
        fresh = 0 <= now_ms - int(sealed["at"]) <= LOGOUT_COOKIE_TTL * 1000
        return fresh and hmac.compare_digest(str(sealed["state"]), digest(state))
    except (ValueError, KeyError, TypeError):
        return False


def signed_out_url(return_url: str, outcome: str, issuer: str) -> str:
    """Where a finished logout lands: the app's page, told the outcome (and, when the IdP kept the
    user signed in, which IdP, so the page can offer to sign out there again)."""
    params = {"signout": outcome}
    if outcome == "idp_session_alive":
        params["idp"] = urlsplit(issuer).hostname or ""
    return add_query(return_url, params)


def origin_of(url: str) -> str:
    """scheme://host[:port], rebuilt from the parsed URL (never the raw text, which goes in a CSP)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def continuation_for_this_browser(values: dict[str, str] | None, logout_state_ok: Callable[[str], bool]) -> bool:
    """A continuation is served only to the browser whose logout made it: the one holding the
    logout cookie sealed with its `state` (a leaked handle alone gets nothing)."""
    return values is not None and logout_state_ok(values.get("state", ""))


def continuation_csp(endpoint: str, nonce: str) -> str:
    """The page runs one script (its nonce), may POST only to the IdP, and is sandboxed: an opaque
    origin, so not even script of this origin that opened it (a popup) can read its DOM."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
        f"form-action 'self' {origin_of(endpoint)}; base-uri 'none'; frame-ancestors 'none'; "
        "sandbox allow-forms allow-scripts"
    )


def continuation_page(endpoint: str, values: dict[str, str], client_id: str, nonce: str) -> str:
    """A page that POSTs RP-Initiated Logout's parameters to the IdP at once (a button without
    script): the id token travels in a request body, never in a URL, history entry or Referer."""
    fields = {**values, "client_id": client_id}
    inputs = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items())
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Signing out</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto'>"
        f'<form id="logout" method="post" action="{escape(endpoint)}">{inputs}'
        "<p>Signing you out at the identity provider…</p>"
        "<noscript><button type=submit>Continue signing out</button></noscript></form>"
        f'<script nonce="{escape(nonce)}">document.getElementById("logout").submit()</script>'
        "</body></html>"
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
