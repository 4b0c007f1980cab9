"""What happens to tokens when sessions end: the one revocation path.

Logout, back-channel logout and the `flask sessions revoke` commands all call `end_sessions`, so
ending a session means the same thing everywhere: the records and their index entries are gone
from Redis first, then each refresh token is revoked at the IdP (RFC 7009), in parallel, each
call bounded by the revocation timeout and best effort: an unreachable IdP never keeps a session
alive here.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from .oidc import Provider
from .sessions import EndedSession, SessionFilter, SessionStore

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
