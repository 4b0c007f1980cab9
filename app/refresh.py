"""Access tokens kept fresh: refreshed under a per-session Redis lock, at most once per expiry
across every worker and host, and never written back into a session that ended meanwhile.

Besides the sign-in's token, a session may hold the user's tokens for other APIs (an upstream
with its own `resource` or `scope`, DESIGN §10): each is obtained with the session's refresh
token (RFC 8707 §2.2), under the same lock, and sealed in the same record under `apis`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from . import metrics
from .errors import BffError, IdpUnavailable, OidcError, RefreshRefused, TokenRefused
from .idp_requests import expiry
from .keyspace import SessionRef
from .oidc import Provider
from .sessions import SessionFilter, SessionStore
from .signout import end_sessions

log = logging.getLogger(__name__)

REFRESH_POLL_SECONDS = 0.02
API_REFUSAL_SECONDS = 30  # an API token the IdP refused is not asked for again in this session for this long
# IdP calls a refresh may make under its lock, each bounded by the IdP timeout: metadata, token,
# JWKS and a JWKS refetch for a new kid. The lock's lease outlives them all.
IDP_CALLS_UNDER_LOCK = 4


@dataclass(frozen=True)
class UserToken:
    """Which of the user's access tokens: the sign-in's (neither set), or one for another RFC 8707
    `resource` and/or `scope`, kept under `apis` in the session's sealed tokens."""

    resource: str | None = None
    scope: str | None = None

    @property
    def key(self) -> str | None:
        return None if not (self.resource or self.scope) else f"{self.resource or ''} {self.scope or ''}"


SIGN_IN = UserToken()


def access_token_for(
    store: SessionStore,
    provider: Provider,
    ref: SessionRef,
    record: dict[str, Any],
    *,
    skew: int,
    which: UserToken = SIGN_IN,
) -> str:
    """A usable access token for this session, refreshed (or obtained) first when it expires
    within `skew`.

    oauth2-proxy's discipline, across every worker and host: take the session's Redis lock,
    reload the session, check again whether a refresh is still needed (another worker may have
    done it), refresh, save, release. Whoever does not get the lock waits for the new token
    instead of spending the (rotating, single-use) refresh token a second time.
    """
    if which.key is None:

        def usable(current: dict[str, Any]) -> str | None:
            return (
                None if _needs_refresh(current, skew) else _usable_tokens(store, provider, ref, current)["access_token"]
            )

        def locked(owner: str) -> str:
            return _refresh_locked(store, provider, ref, skew, owner)
    else:

        def usable(current: dict[str, Any]) -> str | None:
            return _stored_api_token(store, provider, ref, current, which, skew)

        def locked(owner: str) -> str:
            return _api_token_locked(store, provider, ref, skew, owner, which)

    token = usable(record)
    return token if token is not None else _under_lock(store, provider, ref, usable, locked)


def _under_lock(
    store: SessionStore,
    provider: Provider,
    ref: SessionRef,
    usable: Callable[[dict[str, Any]], str | None],
    locked: Callable[[str], str],
) -> str:
    lease_ms = int((IDP_CALLS_UNDER_LOCK * provider.timeout + 1) * 1000)
    deadline = time.monotonic() + lease_ms / 1000 + provider.timeout
    while True:
        owner = store.acquire_refresh_lock(ref, lease_ms)
        if owner:
            try:
                return locked(owner)
            finally:
                store.release_refresh_lock(ref, owner)
        time.sleep(REFRESH_POLL_SECONDS)
        current = store.read(ref)
        if current is None:
            raise RefreshRefused()  # ended meanwhile (the refresh was refused, or a logout)
        token = usable(current)
        if token is not None:
            return token
        if time.monotonic() > deadline:
            raise BffError(503, "refresh_in_progress", "The session's tokens are being refreshed; try again.")


def _refresh_locked(store: SessionStore, provider: Provider, ref: SessionRef, skew: int, owner: str) -> str:
    record = store.read(ref)
    if record is None:
        raise RefreshRefused()
    tokens = _usable_tokens(store, provider, ref, record)
    if not _needs_refresh(record, skew):
        return tokens["access_token"]
    if not tokens.get("refresh_token"):
        if _expired(record):
            end_sessions(store, provider, SessionFilter(session=ref))
            raise RefreshRefused()
        return tokens["access_token"]  # nothing to refresh with; use it while it lasts
    try:
        fresh = _checked_refresh(provider, tokens["refresh_token"], record, SIGN_IN)
    except IdpUnavailable:
        metrics.REFRESHES.labels("idp_unavailable").inc()
        if _expired(record):
            raise
        log.warning("session %s: refresh failed, the IdP is unavailable; using the current token", ref.handle)
        return tokens["access_token"]
    except OidcError as error:  # refused (RefreshRefused), or an id token that fails its checks
        _end_refused(store, provider, ref, error)
    refreshed = {
        **tokens,
        "access_token": fresh["access_token"],
        # RFC 6749 §6: without a new refresh token, the old one stays valid.
        "refresh_token": fresh.get("refresh_token") or tokens["refresh_token"],
        "id_token": fresh.get("id_token") or tokens["id_token"],
        "expires_in": fresh.get("expires_in"),
    }
    _save(store, provider, ref, record, refreshed, owner)
    return fresh["access_token"]


def _api_token_locked(
    store: SessionStore, provider: Provider, ref: SessionRef, skew: int, owner: str, which: UserToken
) -> str:
    record = store.read(ref)
    if record is None:
        raise RefreshRefused()
    token = _stored_api_token(store, provider, ref, record, which, skew)
    if token is not None:
        return token
    if which.resource and which.resource not in (record.get("resources") or ()):
        # RFC 8707: a refresh may only name a resource the sign-in asked for (an upstream added
        # since this session began). Asking anyway would be refused, and strict IdPs spend the
        # refresh token while refusing: the user signs in again instead, and the session stays.
        raise BffError(401, "signin_required", "Sign in again to use this API (this session did not ask for it).")
    tokens = _usable_tokens(store, provider, ref, record)
    if not tokens.get("refresh_token"):
        # Without offline_access (or an IdP that issues no refresh token) there is nothing to ask with.
        raise TokenRefused("no_refresh_token")
    apis = dict(tokens.get("apis") or {})
    try:
        fresh = _checked_refresh(provider, tokens["refresh_token"], record, which)
    except IdpUnavailable:
        metrics.REFRESHES.labels("idp_unavailable").inc()
        raise
    except TokenRefused as refused:  # invalid_scope only (oidc.py): this API's token, the session stays
        metrics.REFRESHES.labels("refused").inc()
        log.warning("session %s: the IdP refused a token for an API (%s)", ref.handle, refused.idp_error)
        apis[which.key] = {"refused": refused.idp_error, "until": int(time.time()) + API_REFUSAL_SECONDS}
        store.replace_tokens(ref, record, {**tokens, "apis": apis}, owner)  # not asked again for a while
        raise
    except OidcError as error:
        _end_refused(store, provider, ref, error)
    apis[which.key] = {
        "access_token": fresh["access_token"],
        "expires_at": expiry(fresh.get("expires_in"), int(time.time())),
    }
    updated = {
        **tokens,
        "refresh_token": fresh.get("refresh_token") or tokens["refresh_token"],
        "id_token": fresh.get("id_token") or tokens["id_token"],
        "apis": apis,
    }  # no `expires_in`: the sign-in token's expiry stays as it is
    _save(store, provider, ref, record, updated, owner)
    return fresh["access_token"]


def _checked_refresh(provider: Provider, refresh_token: str, record: dict[str, Any], which: UserToken) -> dict:
    """A refresh grant whose id token, if the IdP sends one, is checked and names the same user.
    Otherwise the refresh token it brought is revoked at once: no session will hold it."""
    fresh = provider.refresh(refresh_token, resource=which.resource, scope=which.scope)
    if fresh.get("id_token"):
        try:
            claims = provider.verify_id_token(fresh["id_token"], nonce=None, access_token=fresh["access_token"])
            if claims["sub"] != record["sub"]:
                raise RefreshRefused()
        except OidcError:
            if fresh.get("refresh_token"):
                provider.revoke_refresh_token(fresh["refresh_token"])
            raise
    return fresh


def _end_refused(store: SessionStore, provider: Provider, ref: SessionRef, error: OidcError) -> NoReturn:
    metrics.REFRESHES.labels("refused").inc()
    log.info("session %s: the IdP refused the refresh (%s); ending it", ref.handle, error.code)
    end_sessions(store, provider, SessionFilter(session=ref))
    raise RefreshRefused() from None


def _save(
    store: SessionStore, provider: Provider, ref: SessionRef, record: dict[str, Any], tokens: dict[str, Any], owner: str
) -> None:
    if not store.replace_tokens(ref, record, tokens, owner):
        # The session ended while the IdP answered (or our lease ran out): it stays ended, and
        # the refresh token we were just given must not outlive it.
        metrics.REFRESHES.labels("session_ended").inc()
        log.info("session %s ended during its refresh; revoking the new refresh token", ref.handle)
        provider.revoke_refresh_token(tokens["refresh_token"])
        raise RefreshRefused()
    metrics.REFRESHES.labels("success").inc()
    log.info("session %s: tokens refreshed", ref.handle)


def _stored_api_token(
    store: SessionStore, provider: Provider, ref: SessionRef, record: dict[str, Any], which: UserToken, skew: int
) -> str | None:
    """The session's token for `which`, unless missing or expiring within `skew`."""
    entry = (_usable_tokens(store, provider, ref, record).get("apis") or {}).get(which.key)
    if entry and "refused" in entry and entry.get("until", 0) > time.time():
        raise TokenRefused(entry["refused"])
    if not entry or "access_token" not in entry or _due(entry.get("expires_at"), skew):
        return None
    return entry["access_token"]


def _usable_tokens(store: SessionStore, provider: Provider, ref: SessionRef, record: dict[str, Any]) -> dict[str, Any]:
    """The session's tokens; a session whose tokens no configured key opens (a retired key) is
    ended, and the caller answers 401 `session_expired`."""
    tokens = store.open_tokens(ref, record)
    if tokens is None:
        end_sessions(store, provider, SessionFilter(session=ref))
        raise RefreshRefused()
    return tokens


def _due(expires_at: int | None, skew: int) -> bool:
    return expires_at is not None and expires_at - skew <= time.time()


def _needs_refresh(record: dict[str, Any], skew: int) -> bool:
    return _due(record.get("access_expires_at"), skew)


def _expired(record: dict[str, Any]) -> bool:
    return _needs_refresh(record, skew=0)
