"""How the BFF proves it is the client at the IdP's token, revocation and PAR endpoints
(DESIGN §10): `client_secret_basic`, `client_secret_post`, or `private_key_jwt` (RFC 7523, as
OpenID Connect Core §9 profiles it) with the key(s) in `BFF_OIDC_CLIENT_KEY`.

Pure, apart from the clock and randomness of each assertion: the keys are parsed and the method
chosen here; Authlib sends the requests, through its documented `register_client_auth_method`
hook (`AssertionAuth` below).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey, import_key

from .idp_documents import ProviderMetadata
from .idp_requests import client_secret_basic

METHODS = ("auto", "client_secret_basic", "client_secret_post", "private_key_jwt")
KEY_ALGORITHMS = {"RSA": ("RS256", "PS256"), "EC": ("ES256",)}
ASSERTION_LIFETIME = 60  # seconds: long enough for clock skew, short enough to be useless if captured
ASSERTION_AUDIENCES = ("token_endpoint", "issuer")
PUBLIC_MEMBERS = {"RSA": ("kty", "n", "e"), "EC": ("kty", "crv", "x", "y")}  # RFC 7518 §6.2.1, §6.3.1


@dataclass(frozen=True)
class ClientKey:
    key: RSAKey | ECKey
    kid: str
    alg: str
    # The certificate's thumbprints (RFC 7515 `x5t`, `x5t#S256`), sent in the assertion's header
    # when known: Entra ID finds a certificate credential by them, not by `kid`.
    thumbprints: tuple[tuple[str, str], ...] = ()

    def public_jwk(self) -> dict[str, Any]:
        """Only the public members of its kind, whatever else the configured JWK carried."""
        public = self.key.as_dict(private=False)
        jwk = {name: public[name] for name in PUBLIC_MEMBERS["RSA" if isinstance(self.key, RSAKey) else "EC"]}
        return jwk | {"kid": self.kid, "alg": self.alg, "use": "sig"} | dict(self.thumbprints)


def parse_client_keys(raw: str) -> tuple[ClientKey, ...]:
    """`BFF_OIDC_CLIENT_KEY`: one private JWK, a JWKS (`{"keys": [...]}`) or a JSON list of JWKs,
    or one or more PEM private keys one after the other. The first key signs; every key's public
    half is published at `/bff/jwks`, so that during a rotation the IdP still knows the other.
    A key without a `kid` is named by its RFC 7638 thumbprint. Raises ValueError."""
    raw = raw.strip()
    if raw.startswith(("{", "[")):
        try:
            data = json.loads(raw)
        except ValueError:
            raise ValueError("is not valid JSON") from None
        jwks = data.get("keys") if isinstance(data, dict) and "keys" in data else data
        jwks = jwks if isinstance(jwks, list) else [jwks]
        keys = [_from_jwk(jwk) for jwk in jwks]
    elif "-----BEGIN" in raw:
        keys = _from_pem_blocks(["-----BEGIN" + block for block in raw.split("-----BEGIN")[1:]])
    else:
        raise ValueError("must be a private JWK, a JWKS, or PEM private keys")
    if not keys:
        raise ValueError("holds no key")
    kids = [key.kid for key in keys]
    if len(set(kids)) != len(kids):
        raise ValueError("two keys share a kid")
    return tuple(keys)


def _from_jwk(jwk: object) -> ClientKey:
    if not isinstance(jwk, dict) or jwk.get("kty") not in KEY_ALGORITHMS:
        raise ValueError("each key must be an RSA or EC JWK")
    try:
        key = import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):
        raise ValueError(f"a {jwk.get('kty')} JWK could not be read") from None
    thumbprints = tuple((name, jwk[name]) for name in ("x5t", "x5t#S256") if isinstance(jwk.get(name), str))
    chain = jwk.get("x5c")
    if not thumbprints and isinstance(chain, list) and chain and isinstance(chain[0], str):
        try:
            thumbprints = _thumbprints(base64.b64decode(chain[0], validate=True))
        except ValueError:
            raise ValueError("a JWK's x5c is not base64") from None
    return _checked(key, jwk.get("kid"), jwk.get("alg"), thumbprints)


def _from_pem_blocks(blocks: list[str]) -> list[ClientKey]:
    """Private keys, each optionally followed by its certificate (whose thumbprints it then sends)."""
    keys: list[ClientKey] = []
    for block in blocks:
        if block.startswith("-----BEGIN CERTIFICATE-----"):
            if not keys or keys[-1].thumbprints:
                raise ValueError("a certificate must follow the private key it certifies")
            try:
                der = x509.load_pem_x509_certificate(block.encode()).public_bytes(serialization.Encoding.DER)
            except ValueError:
                raise ValueError("a PEM certificate could not be read") from None
            keys[-1] = replace(keys[-1], thumbprints=_thumbprints(der))
            continue
        for kind in ("RSA", "EC"):
            try:
                key = import_key(block.encode(), kind)
            except (JoseError, ValueError, TypeError):
                continue
            keys.append(_checked(key, None, None, ()))
            break
        else:
            raise ValueError("a PEM block is not an RSA or EC private key, nor a certificate")
    return keys


def _thumbprints(der: bytes) -> tuple[tuple[str, str], ...]:
    def b64(digest: bytes) -> str:
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    return (("x5t", b64(hashlib.sha1(der).digest())), ("x5t#S256", b64(hashlib.sha256(der).digest())))  # noqa: S324 - a thumbprint, as RFC 7515 defines x5t


def _checked(key: Any, kid: object, alg: object, thumbprints: tuple[tuple[str, str], ...]) -> ClientKey:
    if not isinstance(key, RSAKey | ECKey) or not key.is_private:
        raise ValueError("each key must be a private key (the BFF signs with it)")
    kty = "RSA" if isinstance(key, RSAKey) else "EC"
    if kty == "RSA" and key.raw_value.key_size < 2048:
        raise ValueError("an RSA key must have at least 2048 bits")
    if kty == "EC" and key.as_dict(private=False).get("crv") != "P-256":
        raise ValueError("an EC key must be on P-256 (ES256)")
    allowed = KEY_ALGORITHMS[kty]
    if alg is not None and alg not in allowed:
        raise ValueError(f"a {kty} key's alg must be one of {', '.join(allowed)}")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise ValueError("a kid must be a non-empty string")
    return ClientKey(key, kid or key.thumbprint(), str(alg or allowed[0]), thumbprints)


def public_jwks(keys: Iterable[ClientKey]) -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in keys]}


def client_assertion(key: ClientKey, client_id: str, audience: str, now: float | None = None) -> str:
    """RFC 7523 §3 / OIDC Core §9: iss = sub = the client id, aud = the IdP, a fresh jti (the
    IdP refuses a replay), a short exp; signed by `key` with its kid in the header."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": secrets.token_urlsafe(32),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    header = {"alg": key.alg, "kid": key.kid, "typ": "JWT", **dict(key.thumbprints)}
    return jwt.encode(header, claims, key.key, algorithms=[key.alg])


class AssertionAuth(PrivateKeyJWT):
    """Authlib's `private_key_jwt` method with our assertion: its own reuses a claims dict (and
    so a jti) across requests when given one, and lasts an hour; the audience is fixed to the
    IdP's choice rather than the endpoint being called (revocation, PAR)."""

    def __init__(self, key: ClientKey, audience: str) -> None:
        super().__init__(token_endpoint=audience)
        self.key = key

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return client_assertion(self.key, auth.client_id, token_endpoint)


@dataclass(frozen=True)
class ClientConfig:
    """The client's authentication and PAR as configured (BFF_OIDC_CLIENT_*, BFF_OIDC_PAR), to
    be checked against one IdP's metadata and applied to Authlib's session for its requests."""

    method: str = "auto"  # one of METHODS
    has_secret: bool = True
    key: ClientKey | None = None  # the one that signs
    assertion_audience: str = "token_endpoint"
    par: str = "auto"

    def checked_method(self, metadata: ProviderMetadata) -> str:
        """The method for this IdP; `MethodMismatch` naming the variable when it cannot work."""
        method = choose_method(
            self.method,
            has_secret=self.has_secret,
            key=self.key,
            advertised=metadata.token_auth_methods,
            signing_algorithms=metadata.token_auth_signing_algorithms,
        )
        if self.par == "always" and not metadata.par_endpoint:
            raise MethodMismatch(
                "BFF_OIDC_PAR: always, but the IdP advertises no pushed_authorization_request_endpoint"
            )
        if self.par == "never" and metadata.par_required:
            raise MethodMismatch("BFF_OIDC_PAR: never, but the IdP requires pushed authorization requests")
        return method

    def par_endpoint(self, metadata: ProviderMetadata) -> str | None:
        return None if self.par == "never" else metadata.par_endpoint

    def register(self, client: OAuth2Session, metadata: ProviderMetadata) -> None:
        """Our methods, through Authlib's documented hook: client_secret_basic done right, and
        private_key_jwt with our assertion."""
        client.register_client_auth_method(("client_secret_basic", client_secret_basic))
        if self.key is not None:
            audience = metadata.issuer if self.assertion_audience == "issuer" else metadata.token_endpoint
            client.register_client_auth_method(AssertionAuth(self.key, audience))


class MethodMismatch(ValueError):
    """What the configuration asks for and what the IdP accepts disagree: names the variable."""


def choose_method(
    configured: str,
    *,
    has_secret: bool,
    key: ClientKey | None,
    advertised: tuple[str, ...],
    signing_algorithms: tuple[str, ...] | None,
) -> str:
    """The client authentication method for this IdP. `auto`: private_key_jwt when a key is
    configured, else client_secret_basic (the spec's default) unless the IdP only takes
    client_secret_post. A method the IdP does not advertise, or a key algorithm it does not
    accept, is a `MethodMismatch` naming the variable to change."""
    if configured == "auto":
        method = "private_key_jwt" if key else _secret_method(advertised)
        variable = "BFF_OIDC_CLIENT_KEY" if key else "BFF_OIDC_CLIENT_SECRET"
    else:
        method, variable = configured, "BFF_OIDC_CLIENT_AUTH"
    if method not in advertised:
        raise MethodMismatch(
            f"{variable}: the IdP does not accept {method} (it advertises {', '.join(advertised) or 'nothing'})"
        )
    if method == "private_key_jwt" and key and signing_algorithms and key.alg not in signing_algorithms:
        accepted = ", ".join(signing_algorithms)
        raise MethodMismatch(f"BFF_OIDC_CLIENT_KEY: the IdP does not accept {key.alg} assertions (it takes {accepted})")
    return method


def _secret_method(advertised: tuple[str, ...]) -> str:
    """client_secret_basic is the spec's default; some IdPs only take client_secret_post."""
    if "client_secret_basic" in advertised or "client_secret_post" not in advertised:
        return "client_secret_basic"
    return "client_secret_post"
