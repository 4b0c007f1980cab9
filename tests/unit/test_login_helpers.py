import pytest

from app.errors import BffError
from app.login import binding_cookie_name, merge_userinfo, parse_prompt, public_claims


def test_binding_cookie_keeps_the_host_prefix_and_differs_per_attempt():
    first = binding_cookie_name("__Host-bff", "state-one")
    second = binding_cookie_name("__Host-bff", "state-two")
    assert first.startswith("__Host-bff-login-") and second.startswith("__Host-bff-login-")
    assert first != second


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, None), ("", None), ("login", "login"), ("login  consent", "login consent")]
)
def test_prompt_values_from_the_spec_pass(raw, expected):
    assert parse_prompt(raw) == expected


@pytest.mark.parametrize("raw", ["bogus", "none login", "login\x00", "consent&x=1"])
def test_unknown_or_contradictory_prompt_is_refused(raw):
    with pytest.raises(BffError) as raised:
        parse_prompt(raw)
    assert raised.value.code == "invalid_prompt"


def test_user_claims_hide_the_protocol_internal_ones():
    claims = {"sub": "a", "nonce": "n", "at_hash": "h", "c_hash": "c", "s_hash": "s", "email": "a@x"}
    assert public_claims(claims) == {"sub": "a", "email": "a@x"}


def test_userinfo_adds_profile_claims_but_never_overrides_the_id_token():
    merged = merge_userinfo({"sub": "a", "iss": "https://idp", "sid": "1"}, {"sub": "a", "iss": "x", "name": "A"})
    assert merged == {"sub": "a", "iss": "https://idp", "sid": "1", "name": "A"}


def test_userinfo_about_another_subject_is_ignored():
    assert merge_userinfo({"sub": "a"}, {"sub": "b", "name": "B"}) == {"sub": "a"}
