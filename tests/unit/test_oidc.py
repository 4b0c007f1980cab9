import time
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from app.idp_documents import ProviderMetadata, metadata_url
from app.oidc import (
    OidcError,
    Provider,
    UnknownKeyId,
    build_logout_url,
    validate_id_token,
)

ISSUER = "https://idp.example.com/realms/demo"
CLIENT = "spa"
SECRET = "client-secret-that-is-at-least-32-bytes-long"
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
EC = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
KEYS = KeySet([RSA, EC])
NOW = int(time.time())


def claims(**overrides):
    base = {"iss": ISSUER, "sub": "alice", "aud": CLIENT, "exp": NOW + 300, "iat": NOW, "nonce": "n-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload, key=RSA, alg="RS256", kid="rsa-1"):
    header = {"alg": alg} if kid is None else {"alg": alg, "kid": kid}
    return jwt.encode(header, payload, key, algorithms=[alg])


def check(token, keys=KEYS, algorithms=("RS256", "ES256"), nonce="n-1", access_token=None):
    return validate_id_token(
        token,
        keys=keys,
        issuer=ISSUER,
        client_id=CLIENT,
        client_secret=SECRET,
        algorithms=algorithms,
        nonce=nonce,
        access_token=access_token,
        now=NOW,
    )


def test_a_valid_rs256_id_token_yields_its_claims():
    assert check(sign(claims()))["sub"] == "alice"


def test_an_es256_id_token_from_a_multi_key_jwks_is_accepted():
    assert check(sign(claims(), key=EC, alg="ES256", kid="ec-1"))["sub"] == "alice"


def test_a_token_without_kid_is_checked_against_keys_of_its_type():
    assert check(sign(claims(), kid=None))["sub"] == "alice"


def test_hmac_id_token_uses_the_client_secret_when_the_idp_advertises_it():
    token = sign(claims(), key=OctKey.import_key(SECRET), alg="HS256", kid=None)
    assert check(token, algorithms=("RS256", "HS256"))["sub"] == "alice"


def test_audience_list_with_matching_azp_is_accepted():
    assert check(sign(claims(aud=[CLIENT, "api"], azp=CLIENT)))["azp"] == CLIENT


def test_matching_at_hash_is_accepted():
    at_hash = create_half_hash("the-access-token", "RS256").decode()
    assert check(sign(claims(at_hash=at_hash)), access_token="the-access-token")["sub"] == "alice"


@pytest.mark.parametrize(
    ("token", "kwargs"),
    [
        pytest.param(sign(claims(iss="https://evil.example")), {}, id="wrong-iss"),
        pytest.param(sign(claims(aud="someone-else")), {}, id="wrong-aud"),
        pytest.param(sign(claims(aud=None)), {}, id="no-aud"),
        pytest.param(sign(claims(aud=[CLIENT, "api"])), {}, id="several-aud-without-azp"),
        pytest.param(sign(claims(azp="someone-else")), {}, id="wrong-azp"),
        pytest.param(sign(claims(exp=NOW - 3600)), {}, id="expired"),
        pytest.param(sign(claims(exp=None)), {}, id="no-exp"),
        pytest.param(sign(claims(iat=None)), {}, id="no-iat"),
        pytest.param(sign(claims(iat=NOW + 3600)), {}, id="issued-in-the-future"),
        pytest.param(sign(claims(nonce="other")), {}, id="wrong-nonce"),
        pytest.param(sign(claims(nonce=None)), {}, id="missing-nonce"),
        pytest.param(sign(claims(sub=None)), {}, id="no-sub"),
        pytest.param(sign(claims(at_hash="AAAAAAAAAAAAAAAAAAAAAA")), {"access_token": "t"}, id="wrong-at-hash"),
        pytest.param(sign(claims(), key=RSAKey.generate_key(2048), kid="rsa-1"), {}, id="forged-signature"),
        pytest.param(sign(claims(), key=OctKey.import_key(SECRET), alg="HS256"), {}, id="hs256-not-advertised"),
        pytest.param(sign(claims(), alg="RS384"), {}, id="alg-not-advertised"),
        pytest.param("not.a.jwt", {}, id="garbage"),
        pytest.param(
            "eyJhbGciOiJub25lIn0." + sign(claims()).split(".")[1] + ".",
            {"algorithms": ("none", "RS256")},
            id="alg-none",
        ),
    ],
)
def test_an_id_token_failing_any_check_is_refused(token, kwargs):
    with pytest.raises(OidcError) as raised:
        check(token, **kwargs)
    assert raised.value.code == "invalid_id_token"


def test_an_unknown_kid_is_reported_so_the_caller_can_refetch_the_jwks():
    other = RSAKey.generate_key(2048, parameters={"kid": "rotated"})
    with pytest.raises(UnknownKeyId):
        check(sign(claims(), key=other, kid="rotated"))
    assert check(sign(claims(), key=other, kid="rotated"), keys=KeySet([RSA, other]))["sub"] == "alice"


def test_logout_url_in_client_id_mode_carries_no_token():
    url = build_logout_url("https://idp/logout", client_id=CLIENT, post_logout_redirect_uri="https://app/", state="st")
    assert parse_qs(urlsplit(url).query) == {
        "client_id": [CLIENT],
        "post_logout_redirect_uri": ["https://app/"],
        "state": ["st"],
    }


def test_logout_url_in_id_token_hint_mode_adds_the_hint_and_keeps_existing_query():
    url = build_logout_url(
        "https://idp/logout?p=b2c_policy",
        client_id=CLIENT,
        post_logout_redirect_uri="https://app/",
        state="st",
        id_token_hint="the.id.token",
    )
    query = parse_qs(urlsplit(url).query)
    assert query["p"] == ["b2c_policy"] and query["id_token_hint"] == ["the.id.token"]
    assert query["state"] == ["st"] and query["client_id"] == [CLIENT]


def test_without_end_session_endpoint_the_logout_url_is_the_post_logout_page():
    assert (
        build_logout_url(None, client_id=CLIENT, post_logout_redirect_uri="https://app/", state="s") == "https://app/"
    )


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        ("https://idp/realms/demo", "https://idp/realms/demo/.well-known/openid-configuration"),
        ("https://tenant.auth0.com/", "https://tenant.auth0.com/.well-known/openid-configuration"),
    ],
)
def test_discovery_url_handles_paths_and_trailing_slashes(issuer, expected):
    assert metadata_url(issuer) == expected


def test_metadata_naming_another_issuer_is_refused():
    document = {"issuer": "https://other", "authorization_endpoint": "a", "token_endpoint": "t", "jwks_uri": "j"}
    with pytest.raises(OidcError):
        ProviderMetadata.from_document(document, ISSUER)


ENDPOINTS = {
    "authorization_endpoint": f"{ISSUER}/auth",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
}


def test_metadata_with_only_required_fields_gets_spec_defaults():
    metadata = ProviderMetadata.from_document({"issuer": ISSUER, **ENDPOINTS}, ISSUER)
    assert metadata.id_token_algorithms == ("RS256",)
    assert metadata.end_session_endpoint is None and not metadata.iss_parameter_supported


@pytest.mark.parametrize(
    "end_session",
    [
        "javascript:alert(1)",
        "https://idp.example;report-uri https://evil.example/r;/end",
        "/relative",
        'https://a"b',
        7,
    ],
)
def test_an_endpoint_that_is_not_an_http_url_is_ignored(end_session):
    """It would end up in a form's action and a CSP on the BFF's own logout page."""
    document = {"issuer": ISSUER, **ENDPOINTS, "end_session_endpoint": end_session}
    assert ProviderMetadata.from_document(document, ISSUER).end_session_endpoint is None


def test_metadata_without_a_usable_token_endpoint_is_refused():
    with pytest.raises(OidcError):
        ProviderMetadata.from_document({"issuer": ISSUER, **ENDPOINTS, "token_endpoint": "t"}, ISSUER)


class CountingProvider(Provider):
    """A Provider whose JWKS fetches are counted instead of sent."""

    def __init__(self):
        super().__init__(
            issuer=ISSUER,
            client_id=CLIENT,
            client_secret=SECRET,
            scopes="openid",
            redirect_uri="x",
            timeout=5,
            revocation_timeout=2,
        )
        self.fetches = 0

    @property
    def metadata(self):
        return ProviderMetadata(issuer=ISSUER, authorization_endpoint="a", token_endpoint="t", jwks_uri="j")

    def _get_json(self, url, what):
        self.fetches += 1
        return {"keys": [RSA.as_dict()]}


def test_an_unknown_kid_refetches_the_jwks_but_made_up_kids_cannot_hammer_the_idp():
    provider = CountingProvider()
    provider.keys()
    provider.keys()
    assert provider.fetches == 1  # cached
    provider.keys(refresh=True)
    assert provider.fetches == 2  # the first unknown kid refetches at once (key rotation)
    provider.keys(refresh=True)
    provider.keys(refresh=True)
    assert provider.fetches == 2  # further ones within the interval do not
