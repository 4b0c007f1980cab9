"""The refresh rules for IdP answers the development IdP never gives, on the real session store.

A scripted provider stands in for such IdPs' token endpoint only; what is under test is what the
BFF does with each answer (`access_token_for`), with Redis real."""

from __future__ import annotations

import time

import pytest

from app.crypto import TokenCipher, parse_encryption_keys
from app.errors import IdpUnavailable, RefreshRefused
from app.oidc import Provider
from app.refresh import access_token_for
from app.sessions import SessionFilter, SessionStore
from dev import forge
from dev.stack import DEV_TOKEN_ENCRYPTION_KEY


class ScriptedProvider(Provider):
    def __init__(self, *answers):
        super().__init__(
            issuer="https://idp",
            client_id="spa",
            client_secret="s",
            scopes="openid",
            redirect_uri="x",
            timeout=5,
            revocation_timeout=2,
        )
        self.answers = list(answers)
        self.refreshed_with: list[str] = []
        self.revoked: list[str] = []

    def refresh(self, refresh_token, **selection):
        self.refreshed_with.append(refresh_token)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def verify_id_token(self, id_token, *, nonce, access_token=None):
        return {"sub": id_token.removeprefix("id-token-for-")}

    def revoke_refresh_token(self, refresh_token):
        self.revoked.append(refresh_token)
        return True


@pytest.fixture
def store(stack):
    return SessionStore(stack.redis, TokenCipher(parse_encryption_keys(DEV_TOKEN_ENCRYPTION_KEY)), 600)


def expiring_session(store, expires_in=-1, refresh_token="rt-1"):
    forged = forge.stored_session(
        store,
        "rule-user",
        access_token="at-1",
        refresh_token=refresh_token,
        id_token="id-token-for-rule-user",
        expires_in=expires_in,
    )
    return forged.ref, forged.record


def test_a_token_far_from_expiry_is_used_without_asking_the_idp(store):
    ref, record = expiring_session(store, expires_in=3600)
    provider = ScriptedProvider()
    assert access_token_for(store, provider, ref, record, skew=30) == "at-1"
    assert provider.refreshed_with == []


def test_a_refresh_answer_without_a_refresh_token_keeps_the_old_one(store):
    ref, record = expiring_session(store)
    provider = ScriptedProvider({"access_token": "at-2", "expires_in": -1}, {"access_token": "at-3", "expires_in": 60})
    assert access_token_for(store, provider, ref, record, skew=30) == "at-2"
    assert access_token_for(store, provider, ref, store.read(ref), skew=30) == "at-3"
    assert provider.refreshed_with == ["rt-1", "rt-1"]  # RFC 6749 §6: the old one is still good
    assert store.open_tokens(ref, store.read(ref))["id_token"] == "id-token-for-rule-user"


def test_a_rotated_refresh_token_and_new_id_token_are_stored(store):
    ref, record = expiring_session(store)
    answer = {"access_token": "at-2", "refresh_token": "rt-2", "id_token": "id-token-for-rule-user", "expires_in": 60}
    provider = ScriptedProvider(answer)
    assert access_token_for(store, provider, ref, record, skew=30) == "at-2"
    assert store.open_tokens(ref, store.read(ref))["refresh_token"] == "rt-2"
    assert store.read(ref)["access_expires_at"] >= time.time() + 55


def test_a_refreshed_id_token_about_someone_else_ends_the_session(store):
    ref, record = expiring_session(store)
    provider = ScriptedProvider({"access_token": "at-2", "id_token": "id-token-for-mallory", "expires_in": 60})
    with pytest.raises(RefreshRefused):
        access_token_for(store, provider, ref, record, skew=30)
    assert store.read(ref) is None and provider.revoked == ["rt-1"]


def test_an_unreachable_idp_leaves_a_still_valid_token_in_use(store):
    ref, record = expiring_session(store, expires_in=10)  # within the skew, not yet expired
    provider = ScriptedProvider(IdpUnavailable("down"))
    assert access_token_for(store, provider, ref, record, skew=30) == "at-1"
    assert store.read(ref) is not None


def test_an_unreachable_idp_with_an_expired_token_is_a_502_and_keeps_the_session(store):
    ref, record = expiring_session(store)
    provider = ScriptedProvider(IdpUnavailable("down"))
    with pytest.raises(IdpUnavailable) as raised:
        access_token_for(store, provider, ref, record, skew=30)
    assert raised.value.status == 502
    assert store.read(ref) is not None  # the IdP being down is no reason to sign anyone out


def test_an_expired_session_without_a_refresh_token_ends(store):
    ref, record = expiring_session(store, refresh_token=None)
    with pytest.raises(RefreshRefused):
        access_token_for(store, ScriptedProvider(), ref, record, skew=30)
    assert store.read(ref) is None
    assert ref not in store.find(SessionFilter(sub="rule-user"))
