"""The session store: records, their indexes, the refresh lock and the logout-token replay
cache, over a Redis client (single server, Sentinel or Cluster). Key names come from
`keyspace.py`; Flask reaches this store through `session_interface.py`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from .crypto import TokenCipher, UnreadableTokens
from .idp_requests import expiry
from .keyspace import (
    ALL_SESSIONS_KEY,
    CONTINUATION,
    HANDLE,
    SessionRef,
    all_sessions_member,
    jti_key,
    logout_continuation_key,
    record_key,
    refresh_lock_key,
    sid_index_key,
    sid_pointer_key,
    user_index_key,
    user_tag,
)
from .redis_client import RedisClient

log = logging.getLogger(__name__)

# Refreshed tokens are written back only by the lock's owner and only into a record that still
# exists: a logout (or any other ending) during the refresh wins, and nothing brings it back.
WRITE_IF_OWNER_AND_LIVE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def now() -> int:
    return int(time.time())


def now_ms() -> int:
    """Milliseconds, for what must order attempts started within one second."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions to end: one session, every session of an IdP session id, or of a user."""

    session: SessionRef | None = None
    sid: str | None = None
    sub: str | None = None


@dataclass(frozen=True)
class EndedSession:
    handle: str
    sub: str
    refresh_token: str | None


@dataclass(frozen=True)
class SessionInfo:
    handle: str
    sub: str
    sid: str | None
    created_at: int
    last_seen: int
    idle_expires_at: int
    expires_at: int
    access_token_expires_at: int | None
    user_agent: str
    client_ip: str


class SessionStore:
    def __init__(self, client: RedisClient, cipher: TokenCipher, idle_timeout: int) -> None:
        self.client = client
        self.cipher = cipher
        self.idle_timeout = idle_timeout
        self._encoder = msgspec.msgpack.Encoder()
        self._release = client.register_script(RELEASE_IF_OWNER)
        self._write_if_owner = client.register_script(WRITE_IF_OWNER_AND_LIVE)
        self._decoder = msgspec.msgpack.Decoder()

    # One session ------------------------------------------------------------------------------

    def new_record(
        self,
        session_id: str,
        *,
        claims: dict[str, Any],
        tokens: dict[str, Any],
        max_lifetime: int,
        user_agent: str,
        client_ip: str,
        resources: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """What one signed-in browser holds server-side; the tokens sealed, bound to this record."""
        ref = SessionRef.from_session_id(session_id)
        assert ref is not None, "session ids come from new_session_id"
        created = now()
        return {
            "sub": claims["sub"],
            "sid": claims.get("sid"),
            "claims": claims,
            "tokens": self.seal_tokens(ref, tokens),
            "access_expires_at": expiry(tokens.get("expires_in"), created),
            "created_at": created,
            "expires_at": created + max_lifetime,
            "user_agent": user_agent[:256],
            "client_ip": client_ip,
            # RFC 8707: what the sign-in asked for, all a refresh may later name (refresh.py).
            "resources": list(resources),
        }

    def seal_tokens(self, ref: SessionRef, tokens: dict[str, Any]) -> bytes:
        """The sign-in's tokens and, under `apis`, the user's tokens for other resources or scopes
        (refresh.py), sealed together: one record, one key, one lock."""
        kept = {k: tokens.get(k) for k in ("access_token", "refresh_token", "id_token")}
        if tokens.get("apis"):
            kept["apis"] = tokens["apis"]
        return self.cipher.seal(json.dumps(kept).encode(), ref.key_id.encode())

    def open_tokens(self, ref: SessionRef, record: dict[str, Any]) -> dict[str, Any] | None:
        """The session's tokens, or None when no configured key opens them (sealed with a key
        that has since been retired): such a session can only be ended, never used."""
        try:
            return json.loads(self.cipher.open(record["tokens"], ref.key_id.encode()))
        except UnreadableTokens:
            log.warning("session %s: tokens sealed with a retired key", ref.handle)
            return None

    def read(self, ref: SessionRef) -> dict[str, Any] | None:
        """One round trip: GETEX slides the idle expiry; the absolute expiry is checked here."""
        raw = self.client.getex(record_key(ref), ex=self.idle_timeout)
        if not isinstance(raw, bytes) or not raw:
            return None
        record = self._decoder.decode(raw)
        if record.get("expires_at", 0) <= now():
            self.client.delete(record_key(ref))
            return None
        return record

    def write(self, ref: SessionRef, record: dict[str, Any]) -> None:
        """Save a record and index it by user, IdP sid and in the all-sessions set, with TTLs that
        outlive it (never the reverse): one pipelined round trip on a single Redis."""
        self.write_many([(ref, record)])

    def write_many(self, items: list[tuple[SessionRef, dict[str, Any]]], batch: int = 1000) -> None:
        """`write` for many sessions, 1 000 to a round trip (imports, benchmarks). Not a
        transaction: an index entry briefly without its record is what readers already skip."""
        for start in range(0, len(items), batch):
            pipe = self.client.pipeline(transaction=False)
            for ref, record in items[start : start + batch]:
                self._queue_write(pipe, ref, record)
            pipe.execute()

    def _queue_write(self, pipe: Any, ref: SessionRef, record: dict[str, Any]) -> None:
        index_until = record["expires_at"] + self.idle_timeout
        sid = record.get("sid")
        pipe.set(record_key(ref), self._encoder.encode(record), ex=self.idle_timeout)
        # The sid pointer is written after the sid index, so that a concurrent removal that sees
        # the index empty and drops the pointer finds the index filled again when it re-checks.
        indexes = [user_index_key(ref.tag), ALL_SESSIONS_KEY]
        indexes += [sid_index_key(ref.tag, sid), sid_pointer_key(sid)] if sid else []
        for index in indexes:
            if index == ALL_SESSIONS_KEY:
                pipe.zadd(index, {all_sessions_member(ref): index_until})
            else:
                pipe.sadd(index, ref.tag if sid and index == sid_pointer_key(sid) else ref.key_id)
            pipe.expireat(index, index_until, nx=True)
            pipe.expireat(index, index_until, gt=True)

    def replace_tokens(self, ref: SessionRef, record: dict[str, Any], tokens: dict[str, Any], lock_owner: str) -> bool:
        """Store refreshed tokens in the record (its idle expiry restarts: a request just used it),
        only while `lock_owner` holds the refresh lock and the record still exists. False when
        the session ended meanwhile: the caller then owns tokens no session holds. Without an
        `expires_in` key (a token for another API was added) the sign-in token's expiry stays."""
        updated = dict(record)
        updated["tokens"] = self.seal_tokens(ref, tokens)
        if "expires_in" in tokens:
            updated["access_expires_at"] = expiry(tokens["expires_in"], now())
        keys = [record_key(ref), refresh_lock_key(ref)]
        return bool(
            self._write_if_owner(keys=keys, args=[lock_owner, self._encoder.encode(updated), self.idle_timeout])
        )

    def acquire_refresh_lock(self, ref: SessionRef, lease_ms: int) -> str | None:
        """One refresher per session across every worker and host; the lease outlives an IdP call."""
        owner = secrets.token_urlsafe(16)
        return owner if self.client.set(refresh_lock_key(ref), owner, nx=True, px=lease_ms) else None

    def release_refresh_lock(self, ref: SessionRef, owner: str) -> None:
        """Delete the lock only if still ours: a lease that ran out may belong to another worker now."""
        self._release(keys=[refresh_lock_key(ref)], args=[owner])

    # Many sessions ----------------------------------------------------------------------------

    def find(self, flt: SessionFilter) -> list[SessionRef]:
        """Live sessions matching the filter; index entries whose record expired are dropped."""
        return [ref for tag in self._tags_for(flt) for ref in self._find_in(tag, flt)]

    def _find_in(self, tag: str, flt: SessionFilter) -> list[SessionRef]:
        index = sid_index_key(tag, flt.sid) if flt.sid else user_index_key(tag)
        refs = [SessionRef(tag, _text(key_id)) for key_id in sorted(self.client.smembers(index))]
        if not refs:
            return []
        pipe = self.client.pipeline(transaction=False)
        for ref in refs:
            pipe.exists(record_key(ref))
        alive = pipe.execute()
        stale = [ref.key_id for ref, exists in zip(refs, alive, strict=True) if not exists]
        if stale:
            self.client.srem(index, *stale)
        return [ref for ref, exists in zip(refs, alive, strict=True) if exists]

    def remove(self, flt: SessionFilter) -> list[EndedSession]:
        """Delete the matching records and every index entry they own (user, sid, sid pointer,
        all-sessions); return what the IdP should revoke. One transaction per user, as Redis
        Cluster requires keys of one slot per transaction."""
        refs = [flt.session] if flt.session is not None else self.find(flt)
        if not refs:
            return []
        by_tag: dict[str, list[SessionRef]] = {}
        for ref in refs:
            by_tag.setdefault(ref.tag, []).append(ref)
        ended = [session for tag, group in by_tag.items() for session in self._remove_group(tag, group)]
        self.client.zrem(ALL_SESSIONS_KEY, *(all_sessions_member(ref) for ref in refs))
        return ended

    def _remove_group(self, tag: str, refs: list[SessionRef]) -> list[EndedSession]:
        pipe = self.client.pipeline(transaction=True)
        for ref in refs:
            pipe.getdel(record_key(ref))
        pipe.srem(user_index_key(tag), *(ref.key_id for ref in refs))
        raws = pipe.execute()[:-1]
        ended: list[EndedSession] = []
        by_sid: dict[str, list[str]] = {}
        for ref, raw in zip(refs, raws, strict=True):
            if not raw:
                continue
            record = self._decoder.decode(raw)
            if record.get("sid"):
                by_sid.setdefault(record["sid"], []).append(ref.key_id)
            ended.append(EndedSession(ref.handle, record["sub"], self._refresh_token(ref, record)))
        if by_sid:
            self._unindex_sids(tag, by_sid)
        return ended

    def _unindex_sids(self, tag: str, by_sid: dict[str, list[str]]) -> None:
        """Drop sessions from their sid indexes, and the user from each sid pointer once none is
        left: three round trips however many sids, not a few per sid."""
        pipe = self.client.pipeline(transaction=True)  # the user's indexes share one slot
        for sid, key_ids in by_sid.items():
            pipe.srem(sid_index_key(tag, sid), *key_ids)
            pipe.scard(sid_index_key(tag, sid))
        left = pipe.execute()[1::2]
        emptied = [sid for sid, count in zip(by_sid, left, strict=True) if not count]
        if not emptied:
            return
        pointers = self.client.pipeline(transaction=False)  # one slot per sid: not one transaction
        for sid in emptied:
            pointers.srem(sid_pointer_key(sid), tag)
        pointers.execute()
        # A session written under one of these sids meanwhile re-added its index entry before its
        # pointer entry (see _queue_write): check again, and keep pointing to it.
        check = self.client.pipeline(transaction=True)
        for sid in emptied:
            check.ttl(sid_index_key(tag, sid))
        for sid, ttl in zip(emptied, check.execute(), strict=True):
            if ttl > 0:
                self.client.sadd(sid_pointer_key(sid), tag)
                self.client.expire(sid_pointer_key(sid), ttl, gt=True)
                self.client.expire(sid_pointer_key(sid), ttl, nx=True)

    def _refresh_token(self, ref: SessionRef, record: dict[str, Any]) -> str | None:
        tokens = self.open_tokens(ref, record)
        return tokens.get("refresh_token") if tokens else None  # unreadable: nothing to revoke

    def _tags_for(self, flt: SessionFilter) -> list[str]:
        if flt.sub is not None:
            return [user_tag(flt.sub)]
        if flt.sid is not None:
            return sorted(_text(tag) for tag in self.client.smembers(sid_pointer_key(flt.sid)))
        raise ValueError("a filter names a session, a sid or a sub")

    def ref_for_handle(self, handle: str) -> SessionRef | None:
        match = HANDLE.fullmatch(handle)
        if not match:
            return None
        tag, prefix = match.groups()
        for key_id in self.client.smembers(user_index_key(tag)):
            if _text(key_id).startswith(prefix):
                ref = SessionRef(tag, _text(key_id))
                return ref if self.client.exists(record_key(ref)) else None
        return None

    def all_refs(self) -> Iterator[SessionRef]:
        """Every session not yet ended nor past its lifetime (some may have idled out since:
        `describe` skips those). Reads the all-sessions index, never SCANs the keyspace."""
        self.client.zremrangebyscore(ALL_SESSIONS_KEY, "-inf", now())
        for member, _ in self.client.zscan_iter(ALL_SESSIONS_KEY, count=1000):
            tag, _, key_id = member.decode().partition(" ")
            yield SessionRef(tag, key_id)

    def count_upper_bound(self) -> int:
        """Cheap (O(log n)): sessions not ended and not past their lifetime, counting those that
        idled out without a request as live until then. For a gauge; `describe` is exact."""
        return self.client.zcount(ALL_SESSIONS_KEY, now(), "+inf")

    def describe(self, refs: list[SessionRef]) -> list[SessionInfo]:
        """Inspection data, read without sliding anyone's idle expiry, 1 000 sessions a round trip."""
        infos: list[SessionInfo] = []
        for start in range(0, len(refs), 1000):
            infos.extend(self._describe_batch(refs[start : start + 1000]))
        return infos

    def _describe_batch(self, refs: list[SessionRef]) -> list[SessionInfo]:
        pipe = self.client.pipeline(transaction=False)
        for ref in refs:
            pipe.get(record_key(ref))
            pipe.ttl(record_key(ref))
        results = pipe.execute()
        infos, moment = [], now()
        for ref, raw, ttl in zip(refs, results[::2], results[1::2], strict=True):
            if not raw or ttl < 0:
                continue
            record = self._decoder.decode(raw)
            infos.append(
                SessionInfo(
                    handle=ref.handle,
                    sub=record["sub"],
                    sid=record.get("sid"),
                    created_at=record["created_at"],
                    last_seen=max(record["created_at"], moment - (self.idle_timeout - ttl)),
                    idle_expires_at=min(moment + ttl, record["expires_at"]),
                    expires_at=record["expires_at"],
                    access_token_expires_at=record.get("access_expires_at"),
                    user_agent=record.get("user_agent", ""),
                    client_ip=record.get("client_ip", ""),
                )
            )
        return infos

    def save_logout_continuation(self, handle: str, values: dict[str, str], ttl: int) -> None:
        """Hold what a `form_post` logout page will POST to the IdP (the id token among it), sealed,
        for one use within `ttl` seconds. Written only by a signed-in session's logout."""
        key = logout_continuation_key(handle)
        self.client.set(key, self.cipher.seal(json.dumps(values).encode(), key.encode()), ex=ttl)

    def take_logout_continuation(self, handle: str) -> dict[str, str] | None:
        """The values saved under `handle`, deleted as they are read: a second use finds nothing."""
        if not CONTINUATION.fullmatch(handle):
            return None  # costs no round trip
        key = logout_continuation_key(handle)
        raw = self.client.getdel(key)
        if not isinstance(raw, bytes):
            return None
        try:
            return json.loads(self.cipher.open(raw, key.encode()))
        except UnreadableTokens:
            return None

    def remember_logout_token(self, issuer: str, jti: str, ttl: int) -> bool:
        """True the first time a logout token's jti is seen, False for a replay."""
        return bool(self.client.set(jti_key(issuer, jti), b"1", nx=True, ex=max(1, ttl)))


def _text(value: bytes | str) -> str:
    """redis-py answers bytes (no decode_responses); its types allow str too."""
    return value.decode() if isinstance(value, bytes) else value
