"""Where sessions live in Redis: session ids, references, and every key name. Pure: no Redis.

Key layout (README, "Redis keys"): every key of one user shares the hash tag `{<user tag>}`, a
hash of their `sub`, so multi-key transactions on one user stay legal on Redis Cluster. The
cookie value is `<user tag>.<256 random bits>`, so a request finds its record in one GETEX
without any lookup; Redis holds only a SHA-256 of it, so reading Redis does not give anyone a
session.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

SESSION_ID = re.compile(r"([A-Za-z0-9_-]{12})\.([A-Za-z0-9_-]{43})")
HANDLE = re.compile(r"([A-Za-z0-9_-]{12})\.([A-Za-z0-9_-]{10})")
CONTINUATION = re.compile(r"[A-Za-z0-9_-]{43}")
ALL_SESSIONS_KEY = "bff:sessions"  # sorted set: "<tag> <key id>" scored by when its entries may go


def digest(value: str) -> str:
    """URL-safe SHA-256: what Redis keys hold instead of secrets and identifiers."""
    raw = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def user_tag(sub: str) -> str:
    return digest(sub)[:12]


def new_session_id(sub: str) -> str:
    """`<user tag>.<32 random bytes>`: the tag routes to the user's Redis slot, the rest is the secret."""
    return f"{user_tag(sub)}.{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class SessionRef:
    """Where one session lives; built from a cookie or a handle, never holding the cookie itself."""

    tag: str
    key_id: str  # SHA-256 of the whole session id

    @classmethod
    def from_session_id(cls, session_id: str) -> SessionRef | None:
        match = SESSION_ID.fullmatch(session_id or "")
        return cls(match.group(1), digest(session_id)) if match else None

    @property
    def handle(self) -> str:
        """Public name for logs and the CLI; it grants nothing."""
        return f"{self.tag}.{self.key_id[:10]}"


# Key names --------------------------------------------------------------------------------------


def _short(value: str) -> str:
    """132 bits of a value's SHA-256: unique enough to name its key, and no secret in Redis."""
    return digest(value)[:22]


def record_key(ref: SessionRef) -> str:
    return f"bff:{{{ref.tag}}}:s:{ref.key_id}"


def user_index_key(tag: str) -> str:
    return f"bff:{{{tag}}}:user"


def sid_index_key(tag: str, sid: str) -> str:
    return f"bff:{{{tag}}}:sid:{_short(sid)}"


def sid_pointer_key(sid: str) -> str:
    """Which users (a set of user tags) an IdP session id names, for logout tokens that carry a
    sid but no sub. Several users may share one sid (an IdP may reuse it after a switch)."""
    return f"bff:sid:{{{_short(sid)}}}"


def all_sessions_member(ref: SessionRef) -> str:
    return f"{ref.tag} {ref.key_id}"


def refresh_lock_key(ref: SessionRef) -> str:
    return f"bff:{{{ref.tag}}}:lock:{ref.key_id}"


def logout_continuation_key(handle: str) -> str:
    """A `form_post` logout waiting for its one navigation to /bff/logout/continue (60 s)."""
    return f"bff:logout:{{{_short(handle)}}}"


def jti_key(issuer: str, jti: str) -> str:
    return f"bff:jti:{{{_short(issuer + ' ' + jti)}}}"


def client_token_keys(
    issuer: str, client_id: str, upstream: str, resource: str | None, scope: str | None
) -> tuple[str, str, str]:
    """The BFF's own (client-credentials) token for one upstream, resource and scope, as this
    client of this IdP obtains it (BFFs of other clients sharing the Redis never share it); the
    lock under which one worker fetches it; and the short-lived mark of a fetch the IdP refused.
    One hash tag: the three live in one Cluster slot."""
    tag = _short("\n".join((issuer, client_id, upstream, resource or "", scope or "")))
    return f"bff:client:{{{tag}}}:token", f"bff:client:{{{tag}}}:lock", f"bff:client:{{{tag}}}:failed"
