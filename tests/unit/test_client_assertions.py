"""Client authentication (DESIGN §10): the keys of BFF_OIDC_CLIENT_KEY, the RFC 7523 assertion's
claims, and the method chosen from the configuration and what the IdP advertises."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from app.client_auth import (
    ASSERTION_LIFETIME,
    MethodMismatch,
    choose_method,
    client_assertion,
    parse_client_keys,
    public_jwks,
)

RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-2026"})
EC = ECKey.generate_key("P-256")
TOKEN_ENDPOINT = "https://idp.example.com/oauth2/token"


def pem(key) -> str:
    return key.as_pem(private=True).decode()


def test_a_jwks_of_two_keys_signs_with_the_first_and_publishes_both_public_halves():
    raw = json.dumps({"keys": [EC.as_dict(private=True), RSA.as_dict(private=True)]})
    first, second = parse_client_keys(raw)
    assert (first.alg, first.kid) == ("ES256", EC.thumbprint())  # no kid: its RFC 7638 thumbprint
    assert (second.alg, second.kid) == ("RS256", "rsa-2026")
    published = public_jwks([first, second])["keys"]
    assert [k["kid"] for k in published] == [EC.thumbprint(), "rsa-2026"]
    assert all("d" not in k and "p" not in k and k["use"] == "sig" for k in published)
    assert {k["alg"] for k in published} == {"ES256", "RS256"}


def test_pem_keys_one_after_the_other_and_a_single_jwk_or_list_are_read():
    assert [k.alg for k in parse_client_keys(pem(RSA) + "\n" + pem(EC))] == ["RS256", "ES256"]
    (single,) = parse_client_keys(json.dumps({**RSA.as_dict(private=True), "alg": "PS256"}))
    assert single.alg == "PS256" and single.kid == "rsa-2026"
    assert len(parse_client_keys(json.dumps([EC.as_dict(private=True)]))) == 1


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("not a key", "must be a private JWK"),
        ("{nope", "not valid JSON"),
        (json.dumps(RSA.as_dict(private=False)), "private key"),
        (json.dumps(OctKey.generate_key(256).as_dict(private=True)), "RSA or EC JWK"),
        (json.dumps(ECKey.generate_key("P-384").as_dict(private=True)), "P-256"),
        (json.dumps(RSAKey.generate_key(1024).as_dict(private=True)), "2048 bits"),
        (json.dumps({**RSA.as_dict(private=True), "alg": "ES256"}), "alg must be one of RS256, PS256"),
        (json.dumps({**RSA.as_dict(private=True), "alg": "none"}), "alg must be one of"),
        (json.dumps({"keys": [RSA.as_dict(private=True), RSA.as_dict(private=True)]}), "share a kid"),
        (json.dumps({"keys": []}), "holds no key"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "not an RSA or EC private key"),
    ],
    ids=[
        "not-a-key", "bad-json", "public", "oct", "P-384", "RSA-1024", "RSA-with-ES256", "alg-none",
        "shared-kid", "empty-set", "bad-pem",
    ],
)  # fmt: skip
def test_a_key_the_bff_cannot_sign_with_is_refused_saying_why(raw, says):
    with pytest.raises(ValueError, match=says):
        parse_client_keys(raw)


@pytest.mark.parametrize("key", [RSA, EC], ids=["RS256", "ES256"])
def test_the_assertion_names_the_client_the_idp_and_a_fresh_jti_and_expires_soon(key):
    (client_key,) = parse_client_keys(json.dumps(key.as_dict(private=True)))
    first = client_assertion(client_key, "bff", TOKEN_ENDPOINT, now=1_800_000_000)
    second = client_assertion(client_key, "bff", TOKEN_ENDPOINT, now=1_800_000_000)
    decoded = jwt.decode(first, KeySet([key]), algorithms=[client_key.alg])
    assert decoded.header["kid"] == client_key.kid and decoded.header["alg"] == client_key.alg
    c = decoded.claims
    assert c["iss"] == c["sub"] == "bff" and c["aud"] == TOKEN_ENDPOINT
    assert c["iat"] == 1_800_000_000 and c["exp"] - c["iat"] == ASSERTION_LIFETIME <= 60
    assert len(c["jti"]) >= 32
    assert jwt.decode(second, KeySet([key]), algorithms=[client_key.alg]).claims["jti"] != c["jti"]


SECRET_METHODS = ("client_secret_basic", "client_secret_post")
(KEY,) = parse_client_keys(json.dumps(EC.as_dict(private=True)))


@pytest.mark.parametrize(
    ("configured", "secret", "key", "advertised", "expected"),
    [
        ("auto", True, None, SECRET_METHODS, "client_secret_basic"),
        ("auto", True, None, ("client_secret_post",), "client_secret_post"),
        ("auto", True, KEY, (*SECRET_METHODS, "private_key_jwt"), "private_key_jwt"),
        ("auto", False, KEY, ("private_key_jwt",), "private_key_jwt"),
        ("client_secret_post", True, KEY, (*SECRET_METHODS, "private_key_jwt"), "client_secret_post"),
    ],
)
def test_the_method_follows_the_configuration_within_what_the_idp_advertises(
    configured, secret, key, advertised, expected
):
    chosen = choose_method(configured, has_secret=secret, key=key, advertised=advertised, signing_algorithms=None)
    assert chosen == expected


@pytest.mark.parametrize(
    ("configured", "key", "advertised", "algorithms", "named"),
    [
        ("auto", KEY, SECRET_METHODS, None, "BFF_OIDC_CLIENT_KEY: the IdP does not accept private_key_jwt"),
        ("auto", None, ("private_key_jwt",), None, "BFF_OIDC_CLIENT_SECRET: the IdP does not accept"),
        ("client_secret_post", None, ("client_secret_basic",), None, "BFF_OIDC_CLIENT_AUTH: "),
        ("auto", KEY, ("private_key_jwt",), ("RS256", "PS256"), "BFF_OIDC_CLIENT_KEY: the IdP does not accept ES256"),
    ],
)
def test_a_mismatch_with_the_idp_names_the_variable_to_change(configured, key, advertised, algorithms, named):
    with pytest.raises(MethodMismatch) as raised:
        choose_method(configured, has_secret=True, key=key, advertised=advertised, signing_algorithms=algorithms)
    assert str(raised.value).startswith(named)


def _self_signed(key) -> bytes:
    """A certificate for `key`'s public half (what Entra ID registers as a certificate credential)."""
    private = serialization.load_pem_private_key(key.as_pem(private=True), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bff")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_certificate_after_its_key_puts_its_thumbprints_in_the_header_as_entra_id_needs():
    certificate = _self_signed(RSA)
    (client_key,) = parse_client_keys(pem(RSA) + certificate.decode())
    der = x509.load_pem_x509_certificate(certificate).public_bytes(serialization.Encoding.DER)
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    header = jwt.decode(client_assertion(client_key, "bff", TOKEN_ENDPOINT), RSA).header
    assert header["x5t#S256"] == expected and header["x5t"] and header["kid"] == client_key.kid
    assert public_jwks([client_key])["keys"][0]["x5t#S256"] == expected
    from_jwk = parse_client_keys(json.dumps({**RSA.as_dict(private=True), "x5c": [base64.b64encode(der).decode()]}))[0]
    assert dict(from_jwk.thumbprints)["x5t#S256"] == expected
    with pytest.raises(ValueError, match="must follow the private key"):
        parse_client_keys(certificate.decode() + pem(RSA))
