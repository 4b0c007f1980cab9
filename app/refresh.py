"""Access tokens kept fresh: refreshed under a per-session Redis lock, at most once per expiry
across every worker and host, and never written back into a session that ended meanwhile.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import metrics
from .errors import BffError, IdpUnavailable, OidcError, RefreshRefused
from .keyspace import SessionRef
from .oidc import Provider
from .sessions import SessionFilter, SessionStore
from .signout import end_sessions

log = logging.getLogger(__name__)

REFRESH_POLL_SECONDS = 0.02
# IdP calls a refresh may make under its lock, each bounded by the IdP timeout: metadata, token,
# JWKS and a JWKS refetch for a new kid. The lock's lease outlives them all.
IDP_CALLS_UNDER_LOCK = 4


def access_token_for(
    store: SessionStore,
    provider: Provider,
    ref: SessionRef,
    record: dict[str, Any],
    *,
    skew: int,
) -> str:
    """A usable access token for this session, refreshed first when it expires within `skew`.

    oauth2-proxy's discipline, across every worker and host: take the session's Redis lock,
    reload the session, check again whether a refresh is still needed (another worker may have
    done it), refresh, save, release. Whoever does not get the lock waits for the new token
    instead of spending the (rotating, single-use) refresh token a second time.
    """
    if not _needs_refresh(record, skew):
        return _usable_tokens(store, provider, ref, record)["access_token"]
    lease_ms = int((IDP_CALLS_UNDER_LOCK * provider.timeout + 1) * 1000)
    deadline = time.monotonic() + lease_ms / 1000 + provider.timeout
    while True:
        owner = store.acquire_refresh_lock(ref, lease_ms)
        if owner:
            try:
                return _refresh_locked(store, provider, ref, skew, owner)
            finally:
                store.release_refresh_lock(ref, owner)
        time.sleep(REFRESH_POLL_SECONDS)
        current = store.read(ref)
        if current is None:
            raise RefreshRefused()  # ended meanwhile (the refresh was refused, or a logout)
        if not _needs_refresh(current, skew):
            return _usable_tokens(store, provider, ref, current)["access_token"]
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
        fresh = provider.refresh(tokens["refresh_token"])
        if fresh.get("id_token"):
            claims = provider.verify_id_token(fresh["id_token"], nonce=None, access_token=fresh["access_token"])
            if claims["sub"] != record["sub"]:
                raise RefreshRefused()
    except IdpUnavailable:
        metrics.REFRESHES.labels("idp_unavailable").inc()
        if _expired(record):
            raise
        log.warning("session %s: refresh failed, the IdP is unavailable; using the current token", ref.handle)
        return tokens["access_token"]
    except OidcError as error:  # refused (RefreshRefused), or an id token that fails its checks
        metrics.REFRESHES.labels("refused").inc()
        log.info("session %s: the IdP refused the refresh (%s); ending it", ref.handle, error.code)
        end_sessions(store, provider, SessionFilter(session=ref))
        raise RefreshRefused() from None
    refreshed = {
        "access_token": fresh["access_token"],
        # RFC 6749 §6: without a new refresh token, the old one stays valid.
        "refresh_token": fresh.get("refresh_token") or tokens["refresh_token"],
        "id_token": fresh.get("id_token") or tokens["id_token"],
        "expires_in": fresh.get("expires_in"),
    }
    if not store.replace_tokens(ref, record, refreshed, owner):
        # The session ended while the IdP answered (or our lease ran out): it stays ended, and
        # the refresh token we were just given must not outlive it.
        metrics.REFRESHES.labels("session_ended").inc()
        log.info("session %s ended during its refresh; revoking the new refresh token", ref.handle)
        provider.revoke_refresh_token(refreshed["refresh_token"])
        raise RefreshRefused()
    metrics.REFRESHES.labels("success").inc()
    log.info("session %s: tokens refreshed", ref.handle)
    return fresh["access_token"]


def _usable_tokens(store: SessionStore, provider: Provider, ref: SessionRef, record: dict[str, Any]) -> dict[str, Any]:
    """The session's tokens; a session whose tokens no configured key opens (a retired key) is
    ended, and the caller answers 401 `session_expired`."""
    tokens = store.open_tokens(ref, record)
    if tokens is None:
        end_sessions(store, provider, SessionFilter(session=ref))
        raise RefreshRefused()
    return tokens


def _needs_refresh(record: dict[str, Any], skew: int) -> bool:
    expires_at = record.get("access_expires_at")
    return expires_at is not None and expires_at - skew <= time.time()


def _expired(record: dict[str, Any]) -> bool:
    return _needs_refresh(record, skew=0)
