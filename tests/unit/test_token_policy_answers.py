"""Issue 14 under attack: the red team's findings that need an answer no IdP in the stack gives
(each failed on the first version)."""

from __future__ import annotations

import pytest

from app import api_access
from app.errors import BffError
from app.keyspace import SessionRef, new_session_id
from app.refresh import UserToken, access_token_for
from app.upstreams import Upstream


class FakeStore:
    """Just enough SessionStore for refresh.py: one record, a lock, writes recorded."""

    def __init__(self, tokens):
        self.tokens = tokens
        self.saved = None

    def read(self, ref):
        return {"sub": "u", "access_expires_at": None, "resources": ["urn:orders", "urn:api"]}

    def open_tokens(self, ref, record):
        return dict(self.tokens)

    def acquire_refresh_lock(self, ref, lease_ms):
        return "owner"

    def release_refresh_lock(self, ref, owner):
        pass

    def replace_tokens(self, ref, record, tokens, owner):
        self.saved = tokens
        return True


class FakeProvider:
    timeout = 1

    def __init__(self, answer):
        self.answer = answer
        self.revoked = []

    def refresh(self, refresh_token, *, resource=None, scope=None):
        return self.answer

    def revoke_refresh_token(self, token):
        self.revoked.append(token)
        return True


@pytest.mark.parametrize("expires_in", [float("inf")], ids=["Infinity"])
def test_a_per_api_refresh_answer_with_a_non_finite_expires_in_does_not_lose_the_rotated_refresh_token(expires_in):
    """refresh._expires_at catches TypeError/ValueError but not OverflowError (int(inf)): the
    IdP has already rotated the refresh token; its new one is neither stored nor revoked, and the
    session keeps the spent one (the next refresh is a reuse: the IdP revokes the grant)."""
    store = FakeStore({"access_token": "at", "refresh_token": "RT1", "id_token": None})
    provider = FakeProvider({"access_token": "api-at", "refresh_token": "RT2", "expires_in": expires_in})
    ref = SessionRef.from_session_id(new_session_id("u"))
    try:
        token = access_token_for(store, provider, ref, store.read(ref), skew=30, which=UserToken("urn:api", None))
    except BffError:
        token = None
    except Exception as error:
        pytest.fail(f"{type(error).__name__} escaped; RT2 saved={store.saved is not None}, revoked={provider.revoked}")
    assert (store.saved and store.saved["refresh_token"] == "RT2") or provider.revoked == ["RT2"], token


def test_an_upstream_naming_the_sign_in_resource_and_a_scope_asks_for_that_resource(monkeypatch):
    """api_access.api_token: resource == BFF_OIDC_RESOURCE and a scope -> UserToken(None, scope):
    the refresh names the scope but drops the configured resource, so the IdP chooses the audience
    (its default, or whichever resource the scope names), and the token is cached under the same
    key as a `{"scope": ...}` upstream's without a resource."""
    seen = {}

    class Settings:
        resource = "https://orders.example"
        refresh_skew = 30

    class Session(dict):
        signed_in = True
        ref = SessionRef.from_session_id(new_session_id("u"))

    monkeypatch.setattr(api_access.extensions, "settings", lambda: Settings)
    monkeypatch.setattr(api_access.extensions, "store", lambda: None)
    monkeypatch.setattr(api_access.extensions, "provider", lambda: None)
    monkeypatch.setattr(api_access, "current_session", lambda: Session())
    monkeypatch.setattr(api_access, "access_token_for", lambda *a, which, **k: seen.setdefault("which", which) and "t")
    upstream = Upstream(
        "https://orders.example/v1", policy="user", resource="https://orders.example", scope="orders:read"
    )
    api_access.api_token("orders-ro", upstream)
    assert seen["which"].resource == "https://orders.example", seen["which"]


def test_a_per_api_refresh_whose_id_token_names_another_user_revokes_the_refresh_token_it_was_given(monkeypatch):
    """refresh._checked_refresh: a different `sub` ends the session (good), but the refresh token
    the IdP has just issued with that answer is dropped, never revoked: end_sessions revokes the
    spent one the record held. DESIGN section 8: tokens no session holds are revoked."""
    from app import refresh

    ended = []
    monkeypatch.setattr(refresh, "end_sessions", lambda store, provider, which: ended.append(which))
    store = FakeStore({"access_token": "at", "refresh_token": "RT1", "id_token": "id1"})

    class OtherSub(FakeProvider):
        def verify_id_token(self, id_token, *, nonce, access_token=None):
            return {"sub": "mallory"}

    provider = OtherSub({"access_token": "api-at", "refresh_token": "RT2", "id_token": "id2", "expires_in": 300})
    ref = SessionRef.from_session_id(new_session_id("u"))
    with pytest.raises(BffError):
        access_token_for(store, provider, ref, store.read(ref), skew=30, which=UserToken("urn:api", None))
    assert ended and "RT2" in provider.revoked, provider.revoked


def test_bff_jwks_publishes_only_public_key_members():
    """client_auth.ClientKey.public_jwk starts from joserfc's as_dict(private=False), which keeps
    every member joserfc does not know: a key exported with extras (an EC key carrying RSA-style
    `p`/`q`, a `k`, a vendor's private field) has them served to anyone at GET /bff/jwks."""
    import json

    from joserfc.jwk import ECKey

    from app.client_auth import parse_client_keys, public_jwks

    jwk = ECKey.generate_key("P-256", parameters={"kid": "e1"}).as_dict(private=True)
    jwk.update({"k": "U0VDUkVU", "p": "U0VDUkVU", "x-vault-private": "U0VDUkVU"})
    (published,) = public_jwks(parse_client_keys(json.dumps(jwk)))["keys"]
    assert set(published) <= {"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use", "x5t", "x5t#S256"}, published


def test_a_duplicate_upstream_name_is_a_configuration_error():
    """json.loads keeps the last of two equal keys: a second "orders" entry silently replaces the
    first (here a `user` upstream becomes `client`: anyone may call it with the BFF's own token),
    though load_upstreams promises every mistake reported."""
    from app.env import ConfigError
    from app.upstreams import load_upstreams

    raw = '{"orders": "https://orders.example/v1", "orders": {"url": "https://orders.example/v1", "token": "client"}}'
    with pytest.raises(ConfigError):
        load_upstreams({"BFF_API_UPSTREAMS": raw})


def test_a_new_authentication_without_sids_is_not_the_same_grant():
    """signout._same_grant took a missing sid for a match: with an IdP that sends none, a sign-in
    after a new authentication (a new IdP session, a new grant) never revoked the old token."""
    from app.signout import _same_grant

    old = {"sub": "alice", "sid": None, "claims": {"sub": "alice", "auth_time": 1_000}}
    new = {"sub": "alice", "auth_time": 90_000}  # re-authenticated a day later: another IdP session
    assert not _same_grant(old, new)


def test_a_sid_on_one_side_only_is_not_the_same_grant():
    from app.signout import _same_grant

    old = {"sub": "alice", "sid": "idp-session-1", "claims": {"sub": "alice", "auth_time": 1_000}}
    new = {"sub": "alice", "auth_time": 90_000}  # the IdP stopped sending sid; a new authentication
    assert not _same_grant(old, new)
