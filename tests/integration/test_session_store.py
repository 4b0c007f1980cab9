"""The session store's contract, on a real Redis in each topology (as oauth2-proxy runs one suite
over every store): indexes, TTLs, hash tags, lifetimes, encryption at rest, ending sessions (its
MULTI included, on a real Cluster)."""

from __future__ import annotations

import time

import pytest
from redis.crc import key_slot
from support.stack_fixtures import TOPOLOGIES

from app.crypto import TokenCipher, generate_key, parse_encryption_keys
from app.keyspace import (
    SessionRef,
    record_key,
    sid_index_key,
    sid_pointer_key,
    user_index_key,
    user_tag,
)
from app.redis_client import make_redis, parse_redis_url
from app.sessions import SessionFilter, SessionStore
from dev import forge
from dev.stack import DEV_TOKEN_ENCRYPTION_KEY

# One process runs these (make test: --dist loadgroup), so that the Sentinel set and the
# Cluster start once per run rather than once per process.
pytestmark = pytest.mark.xdist_group("redis-topologies")

IDLE = 600


@pytest.fixture(params=TOPOLOGIES)
def store(request, redis_topologies):
    client = make_redis(parse_redis_url(redis_topologies.url(request.param)), 1.0)
    yield SessionStore(client, TokenCipher(parse_encryption_keys(DEV_TOKEN_ENCRYPTION_KEY)), IDLE)
    client.close()


def stored_session(store, sub="store-user", sid="idp-sid-1", max_lifetime=3600, **tokens):
    forged = forge.stored_session(store, sub, sid=sid, max_lifetime=max_lifetime, **tokens)
    return forged.ref, forged.record


def test_every_key_of_one_user_lands_in_one_cluster_slot(store):
    ref, _ = stored_session(store, sub="slot-user", sid="slot-sid")
    keys = [record_key(ref), user_index_key(ref.tag), sid_index_key(ref.tag, "slot-sid")]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert all(store.client.exists(k) for k in keys)


def test_index_by_user_and_by_sid_finds_live_sessions(store):
    a, _ = stored_session(store, sub="indexed", sid="sid-a")
    b, _ = stored_session(store, sub="indexed", sid="sid-b")
    assert set(store.find(SessionFilter(sub="indexed"))) == {a, b}
    assert store.find(SessionFilter(sid="sid-a")) == [a]  # sid only: through the sid pointer
    assert store.find(SessionFilter(sub="indexed", sid="sid-b")) == [b]


def test_expired_records_are_never_reported_and_their_index_entries_are_dropped(store):
    live, _ = stored_session(store, sub="stale", sid="stale-sid")
    gone, _ = stored_session(store, sub="stale", sid="stale-sid")
    store.client.delete(record_key(gone))  # as if its TTL ran out
    assert store.find(SessionFilter(sub="stale")) == [live]
    assert store.client.smembers(user_index_key(live.tag)) == {live.key_id.encode()}
    assert store.find(SessionFilter(sid="stale-sid")) == [live]
    assert store.client.smembers(sid_index_key(live.tag, "stale-sid")) == {live.key_id.encode()}


def test_indexes_outlive_their_records_and_every_key_expires(store):
    ref, record = stored_session(store, sub="ttl-user", sid="ttl-sid", max_lifetime=7200)
    record_ttl = store.client.ttl(record_key(ref))
    assert 0 < record_ttl <= IDLE
    for key in (user_index_key(ref.tag), sid_index_key(ref.tag, "ttl-sid"), sid_pointer_key("ttl-sid")):
        expires_at = store.client.expiretime(key)
        assert record["expires_at"] + IDLE - 2 <= expires_at <= record["expires_at"] + IDLE


def test_reading_slides_the_idle_expiry_in_one_round_trip(store):
    ref, _ = stored_session(store, sub="slider")
    store.client.expire(record_key(ref), 5)
    assert store.read(ref)["sub"] == "slider"
    assert store.client.ttl(record_key(ref)) > IDLE - 5


def test_the_absolute_lifetime_is_never_extended(store):
    ref, record = stored_session(store, sub="absolute")
    store.read(ref)
    assert store.read(ref)["expires_at"] == record["expires_at"]
    raw = dict(record, expires_at=int(time.time()) - 1)
    store.write(ref, raw)
    assert store.read(ref) is None
    assert not store.client.exists(record_key(ref))


def test_remove_by_user_deletes_records_and_index_entries_and_returns_refresh_tokens(store):
    a, _ = stored_session(store, sub="leaver", sid="l1", refresh_token="rt-1")
    b, _ = stored_session(store, sub="leaver", sid="l2", refresh_token="rt-2")
    ended = store.remove(SessionFilter(sub="leaver"))
    assert sorted(e.refresh_token for e in ended) == ["rt-1", "rt-2"]
    assert {e.handle for e in ended} == {a.handle, b.handle}
    for key in (record_key(a), record_key(b), user_index_key(a.tag), sid_index_key(a.tag, "l1")):
        assert not store.client.exists(key)
    assert store.remove(SessionFilter(sub="leaver")) == []


def test_a_handle_finds_its_session_but_is_not_a_session_id(store):
    ref, _ = stored_session(store, sub="handled")
    assert store.ref_for_handle(ref.handle) == ref
    assert SessionRef.from_session_id(ref.handle) is None
    assert store.ref_for_handle("not-a-handle") is None


def test_tokens_are_sealed_at_rest_and_bound_to_their_record(store):
    ref, _ = stored_session(store, sub="sealed", access_token="plain-access-token-value")
    raw = store.client.get(record_key(ref))
    assert b"plain-access-token-value" not in raw
    record = store.read(ref)
    assert store.open_tokens(ref, record)["access_token"] == "plain-access-token-value"
    other, _ = stored_session(store, sub="sealed")
    assert store.open_tokens(other, record) is None  # a blob moved to another record does not open


def test_key_rotation_reads_old_records_and_writes_with_the_new_key(stack):
    old_key, new_key = generate_key(), generate_key()
    before = SessionStore(stack.redis, TokenCipher(parse_encryption_keys(old_key)), IDLE)
    ref, _ = stored_session(before, sub="rotated", access_token="sealed-with-old")
    rotated = SessionStore(stack.redis, TokenCipher(parse_encryption_keys(f"{new_key},{old_key}")), IDLE)
    assert rotated.open_tokens(ref, rotated.read(ref))["access_token"] == "sealed-with-old"
    fresh, _ = stored_session(rotated, sub="rotated", access_token="sealed-with-new")
    only_new = SessionStore(stack.redis, TokenCipher(parse_encryption_keys(new_key)), IDLE)
    assert only_new.open_tokens(fresh, only_new.read(fresh))["access_token"] == "sealed-with-new"
    assert only_new.open_tokens(ref, only_new.read(ref)) is None


def test_no_issued_token_is_readable_in_any_redis_value(stack, make_agent):
    for name in ("dump-a", "dump-b"):
        make_agent().login(name)
    values = b"".join(stack.redis.dump(key) or b"" for key in stack.redis.scan_iter())
    tokens = stack.issued_tokens()
    assert tokens
    assert not [t for t in tokens if t.encode() in values]
    for token in tokens:  # nor a JWT's payload or signature on its own
        parts = token.split(".")
        assert not any(p.encode() in values for p in parts[1:] if len(p) >= 16)


def test_user_tag_is_stable_and_short():
    assert user_tag("alice") == user_tag("alice") != user_tag("bob")
    assert len(user_tag("alice")) == 12


def test_one_idp_sid_may_name_sessions_of_several_users_and_a_sid_only_ending_finds_them_all(store):
    first, _ = stored_session(store, sub="shared-sid-1", sid="shared-sid")
    second, _ = stored_session(store, sub="shared-sid-2", sid="shared-sid")
    assert set(store.find(SessionFilter(sid="shared-sid"))) == {first, second}
    assert {s.sub for s in store.remove(SessionFilter(sid="shared-sid"))} == {"shared-sid-1", "shared-sid-2"}
    assert store.find(SessionFilter(sid="shared-sid")) == []


def test_three_hundred_sessions_started_and_ended_leave_no_key_behind(store):
    before = set(store.client.scan_iter())
    for i in range(300):
        ref, _ = stored_session(store, sub=f"soak-{i % 7}", sid=f"soak-sid-{i}")
        assert store.remove(SessionFilter(session=ref))
    assert set(store.client.scan_iter()) - before == set()


def test_ending_one_of_two_sessions_under_a_sid_keeps_the_pointer_to_the_other(store):
    first, _ = stored_session(store, sub="pointer-a", sid="pointer-sid")
    second, _ = stored_session(store, sub="pointer-b", sid="pointer-sid")
    store.remove(SessionFilter(session=first))
    assert store.find(SessionFilter(sid="pointer-sid")) == [second]
