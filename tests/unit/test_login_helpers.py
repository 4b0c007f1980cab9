import pytest

from app.crypto import CookieSealer
from app.errors import BffError
from app.login import (
    LOGIN_TTL,
    MAX_ATTEMPTS,
    MAX_DROPS,
    Attempt,
    attempt_cookie_name,
    attempts_to_drop,
    merge_userinfo,
    open_attempt,
    parse_prompt,
    public_claims,
    seal_attempt,
)

SEALER = CookieSealer("x" * 32, "bff sealed cookies v1")
NOW = 1_800_000_000_000


def attempt(started_ms: int = NOW, state: str = "s") -> Attempt:
    return Attempt(state, "verifier", "nonce", "/back", None, started_ms)


def test_attempt_cookie_keeps_its_prefix_and_differs_per_attempt():
    first = attempt_cookie_name("__Secure-bff-login-", "state-one")
    second = attempt_cookie_name("__Secure-bff-login-", "state-two")
    assert first.startswith("__Secure-bff-login-") and second.startswith("__Secure-bff-login-")
    assert first != second


def test_a_sealed_attempt_opens_under_its_own_name_only_and_only_until_it_expires():
    value = seal_attempt(SEALER, "bff-login-a", attempt())
    assert open_attempt(SEALER, "bff-login-a", value, NOW + 1000) == attempt()
    assert open_attempt(SEALER, "bff-login-b", value, NOW) is None
    assert open_attempt(SEALER, "bff-login-a", value, NOW + LOGIN_TTL * 1000 + 1) is None
    assert open_attempt(CookieSealer("y" * 32, "bff sealed cookies v1"), "bff-login-a", value, NOW) is None
    tampered = value[:-2] + ("AA" if value[-2:] != "AA" else "BB")
    assert open_attempt(SEALER, "bff-login-a", tampered, NOW) is None


def name(i: int | str) -> str:
    return f"bff-login-{str(i) * 12}"[:22]


def test_a_new_attempt_drops_unreadable_cookies_and_all_but_the_newest_two():
    cookies = {name(i): seal_attempt(SEALER, name(i), attempt(NOW + i)) for i in range(5)}
    cookies[name("j")] = "junk"
    cookies["bff-login-not-our-format"] = "x"
    cookies["theme"] = "dark"
    dropped = attempts_to_drop(SEALER, cookies, "bff-login-", NOW + 10)
    assert sorted(dropped) == [name(0), name(1), name(2), name("j")]
    assert len([n for n in cookies if n.startswith("bff-login-") and n not in dropped]) - 1 == MAX_ATTEMPTS - 1


def test_junk_attempt_cookies_are_dropped_a_few_at_a_time():
    cookies = {f"bff-login-{i:012d}": "junk" for i in range(400)}
    assert len(attempts_to_drop(SEALER, cookies, "bff-login-", NOW)) == MAX_DROPS


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
