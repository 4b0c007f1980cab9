"""Sessions and logout tokens made directly, as the BFF and the IdP would make them: for tests
that need a session or a (forged) logout token without a trip through the IdP's pages, and for
benchmarks that need a million sessions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from app.jwt_checks import BACKCHANNEL_LOGOUT_EVENT
from app.keyspace import SessionRef, new_session_id
from app.sessions import SessionStore
from dev.stack import CLIENT_ID


@dataclass(frozen=True)
class ForgedSession:
    session_id: str  # the cookie value
    ref: SessionRef
    record: dict[str, Any]


def session_record(
    store: SessionStore,
    sub: str,
    *,
    sid: str | None = None,
    max_lifetime: int = 3600,
    claims: dict[str, Any] | None = None,
    user_agent: str = "forge",
    client_ip: str = "203.0.113.9",
    **tokens: Any,
) -> ForgedSession:
    """A new session id and the record sign-in would store for it (not written). Tokens default to
    placeholders; pass `access_token=`, `refresh_token=`, `id_token=`, `expires_in=` to choose."""
    session_id = new_session_id(sub)
    ref = SessionRef.from_session_id(session_id)
    assert ref is not None
    tokens = {"access_token": "at-" + session_id, "refresh_token": None, "id_token": "it", **tokens}
    record = store.new_record(
        session_id,
        claims={"sub": sub, **({"sid": sid} if sid else {}), **(claims or {})},
        tokens=tokens,
        max_lifetime=max_lifetime,
        user_agent=user_agent,
        client_ip=client_ip,
    )
    return ForgedSession(session_id, ref, record)


def stored_session(store: SessionStore, sub: str, **options: Any) -> ForgedSession:
    """`session_record`, written to the store with its indexes."""
    forged = session_record(store, sub, **options)
    store.write(forged.ref, forged.record)
    return forged


def logout_token(
    key: RSAKey,
    *,
    issuer: str,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.4) signed with `key`:
    valid unless `claims` say otherwise (a claim given as None is left out)."""
    now = int(time.time())
    payload = {
        "iss": issuer,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        **claims,
    }
    payload = {k: v for k, v in payload.items() if v is not None}
    kid = key.kid or "test-key-1"
    return jwt.encode(header or {"alg": "RS256", "kid": kid, "typ": "logout+jwt"}, payload, key)
