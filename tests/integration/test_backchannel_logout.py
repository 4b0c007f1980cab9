"""OpenID Connect Back-Channel Logout: the IdP can end our sessions; nobody else can."""

from __future__ import annotations

import time

import pytest
import requests
from joserfc.jwk import RSAKey

from dev import forge

OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "test-key-1"})  # same kid, wrong key


def post_logout_token(stack, token: str) -> requests.Response:
    return requests.post(f"{stack.bff_url}/bff/backchannel-logout", data={"logout_token": token}, timeout=10)


def logout_token(stack, key=None, header=None, **claims) -> str:
    """A logout token the dev IdP would send for "victim", unless `claims` say otherwise."""
    return forge.logout_token(
        key or stack.signing_key, issuer=stack.issuer, header=header, **{"sub": "victim", **claims}
    )


def test_ending_the_session_at_the_idp_ends_the_bff_session(stack, make_agent):
    a = make_agent()
    a.login("wendy")
    bystander = make_agent()
    bystander.login("xavier")
    # The person signs out at the IdP directly, not through the BFF.
    a.follow_logout_url(f"{stack.issuer}/session/end")
    deadline = time.monotonic() + 10
    while a.user().status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)  # the IdP may notify us just after answering the browser
    assert a.user().status_code == 401
    assert bystander.user().status_code == 200


def test_a_valid_logout_token_for_a_sub_ends_all_of_that_users_sessions(stack, make_agent):
    first, second, other = make_agent(), make_agent(), make_agent()
    first.login("victim")
    second.login("victim")
    other.login("yolanda")
    response = post_logout_token(stack, logout_token(stack, sub="victim"))
    assert response.status_code == 200
    assert "no-store" in response.headers["Cache-Control"]
    assert first.user().status_code == 401 and second.user().status_code == 401
    assert other.user().status_code == 200


def test_a_logout_token_with_only_a_sid_ends_just_that_idp_session(stack, make_agent):
    a, b = make_agent(), make_agent()
    a.login("zed")
    sid = a.user().json()["claims"]["sid"]
    b.login("zed")  # another browser: another IdP session, another sid
    response = post_logout_token(stack, logout_token(stack, sub=None, sid=sid))
    assert response.status_code == 200
    assert a.user().status_code == 401
    assert b.user().status_code == 200


@pytest.mark.parametrize("typ", [None, "JWT", "logout+jwt"])
def test_typ_may_be_logout_jwt_jwt_or_absent(stack, make_agent, typ):
    a = make_agent()
    a.login("victim")
    header = {"alg": "RS256", "kid": "test-key-1"} | ({"typ": typ} if typ else {})
    assert post_logout_token(stack, logout_token(stack, header=header)).status_code == 200
    assert a.user().status_code == 401


def test_a_logout_token_without_exp_is_accepted_when_recent(stack, make_agent):
    a = make_agent()
    a.login("victim")
    assert post_logout_token(stack, logout_token(stack, exp=None)).status_code == 200
    assert a.user().status_code == 401


def forged(name):
    now = int(time.time())
    return {
        "garbage": lambda s: "not-a-jwt",
        "wrong_signature_key": lambda s: logout_token(s, key=OTHER_KEY),
        "alg_none": lambda s: "eyJhbGciOiJub25lIn0." + logout_token(s).split(".")[1] + ".",
        "wrong_iss": lambda s: logout_token(s, iss="https://evil.example"),
        "wrong_aud": lambda s: logout_token(s, aud="another-client"),
        "missing_events": lambda s: logout_token(s, events=None),
        "wrong_event": lambda s: logout_token(s, events={"http://example.com/other": {}}),
        "with_nonce": lambda s: logout_token(s, nonce="n"),
        "neither_sub_nor_sid": lambda s: logout_token(s, sub=None),
        "expired": lambda s: logout_token(s, iat=now - 600, exp=now - 300),
        "no_exp_and_old": lambda s: logout_token(s, iat=now - 3600, exp=None),
        "issued_in_the_future": lambda s: logout_token(s, iat=now + 3600),
        "no_jti": lambda s: logout_token(s, jti=None),
        "id_token_typ": lambda s: logout_token(s, header={"alg": "RS256", "kid": "test-key-1", "typ": "id+jwt"}),
        "unknown_kid": lambda s: logout_token(s, key=OTHER_KEY, header={"alg": "RS256", "kid": "nobody"}),
    }[name]


FORGERIES = [
    "garbage",
    "wrong_signature_key",
    "alg_none",
    "wrong_iss",
    "wrong_aud",
    "missing_events",
    "wrong_event",
    "with_nonce",
    "neither_sub_nor_sid",
    "expired",
    "no_exp_and_old",
    "issued_in_the_future",
    "no_jti",
    "id_token_typ",
    "unknown_kid",
]


@pytest.mark.parametrize("name", FORGERIES)
def test_a_forged_logout_token_is_refused_and_ends_nothing(stack, make_agent, name):
    victim, bystander = make_agent(), make_agent()
    victim.login("victim")
    bystander.login("bystander")
    before = stack.snapshot()
    response = post_logout_token(stack, forged(name)(stack))
    assert response.status_code == 400
    assert "no-store" in response.headers["Cache-Control"]
    assert response.json()["error"] == "invalid_request" and response.json()["error_description"]
    assert stack.snapshot() == before
    assert victim.user().status_code == 200 and bystander.user().status_code == 200


def test_a_replayed_logout_token_is_refused(stack, make_agent):
    token = logout_token(stack)
    assert post_logout_token(stack, token).status_code == 200
    victim = make_agent()
    victim.login("victim")
    response = post_logout_token(stack, token)
    assert response.status_code == 400 and "replayed" in response.json()["error_description"]
    assert victim.user().status_code == 200


@pytest.mark.parametrize(
    "body", [{}, {"logout_token": ""}, {"other": "x"}], ids=["empty", "blank-token", "wrong-field"]
)
def test_a_request_without_a_logout_token_is_refused(stack, body):
    response = requests.post(f"{stack.bff_url}/bff/backchannel-logout", data=body, timeout=10)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
