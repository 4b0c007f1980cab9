"""JWT checks for the tokens an IdP sends us: id tokens and back-channel logout tokens.

Pure functions over joserfc: the signature with an algorithm the IdP advertises (HMAC ones keyed
by the client secret), keys with or without `kid`, then the claims each spec requires.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from typing import Any

from authlib.oidc.core.util import create_half_hash
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

from .errors import OidcError

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
CLOCK_SKEW = 60  # seconds of leeway on exp/iat/nbf, as most relying parties allow
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPES = frozenset({"jwt", "logout+jwt", "application/logout+jwt"})
LOGOUT_TOKEN_MAX_AGE = 600  # seconds; for logout tokens without exp
_KTY_FOR_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP", "HS": "oct"}


def validate_id_token(
    id_token: str,
    *,
    keys: KeySet,
    issuer: str,
    client_id: str,
    client_secret: str,
    algorithms: Iterable[str],
    nonce: str | None,
    access_token: str | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """Validate per OpenID Connect Core §3.1.3.7 and return the claims.

    Signature with an advertised algorithm (HMAC ones keyed by the client secret), `iss`,
    `aud` containing the client id (Authlib would skip it), `azp` when several audiences,
    `exp`, `iat`, `nonce` when one was sent, and `at_hash` when present.
    """
    code, what = "invalid_id_token", "id token"
    header, claims = verify_jws(
        id_token, keys=keys, client_secret=client_secret, algorithms=algorithms, code=code, what=what
    )
    options: dict[str, Any] = {"sub": {"essential": True}, "exp": {"essential": True}}
    if nonce is not None:
        options["nonce"] = {"essential": True, "value": nonce}
    _check_claims(claims, issuer=issuer, client_id=client_id, now=now, options=options, code=code, what=what)
    if access_token and "at_hash" in claims:
        expected = create_half_hash(access_token, header["alg"])
        if expected is None or not hmac.compare_digest(str(claims["at_hash"]), expected.decode()):
            raise OidcError(code, "the id token's at_hash does not match the access token")
    return claims


def validate_logout_token(
    logout_token: str,
    *,
    keys: KeySet,
    issuer: str,
    client_id: str,
    client_secret: str,
    algorithms: Iterable[str],
    now: int | None = None,
) -> dict[str, Any]:
    """Validate per OpenID Connect Back-Channel Logout 1.0 §2.6 and return the claims.

    `typ` may be `logout+jwt`, `JWT` or absent; `exp` is checked when present (some IdPs send
    none, and then `iat` must be recent); `events` must hold the back-channel logout event;
    `sub` or `sid` must be present, a `nonce` must not, and `jti` must be (for replay checks).
    """
    code, what = "invalid_request", "logout token"
    header, claims = verify_jws(
        logout_token, keys=keys, client_secret=client_secret, algorithms=algorithms, code=code, what=what
    )
    if header.get("typ") is not None and str(header["typ"]).lower() not in LOGOUT_TOKEN_TYPES:
        raise OidcError(code, f"the logout token's typ {header['typ']!r} is not a logout token's")
    options = {"jti": {"essential": True}}
    _check_claims(claims, issuer=issuer, client_id=client_id, now=now, options=options, code=code, what=what)
    now = int(time.time()) if now is None else now
    if "exp" not in claims and claims["iat"] < now - LOGOUT_TOKEN_MAX_AGE - CLOCK_SKEW:
        raise OidcError(code, "the logout token has no exp and was issued too long ago")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise OidcError(code, "the logout token lacks the back-channel logout event")
    if not isinstance(claims.get("sub"), str) and not isinstance(claims.get("sid"), str):
        raise OidcError(code, "the logout token names neither a sub nor a sid")
    if "nonce" in claims:
        raise OidcError(code, "a logout token must not carry a nonce")
    return claims


def verify_jws(
    token: str, *, keys: KeySet, client_secret: str, algorithms: Iterable[str], code: str, what: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the signature with an algorithm the IdP advertises; return (header, claims)."""
    try:
        header = dict(jws.extract_compact(token.encode()).protected)
    except (JoseError, ValueError, UnicodeError):
        raise OidcError(code, f"the {what} is not a well-formed JWS") from None
    alg = header.get("alg")
    if alg not in set(algorithms) & (ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS):
        raise OidcError(code, f"the {what}'s algorithm {alg!r} is not accepted")
    if alg in HMAC_ALGORITHMS:
        candidates = [OctKey.import_key(client_secret)]
    else:
        candidates = _candidate_keys(keys, header, code)
    for key in candidates:
        try:
            return header, dict(jwt.decode(token, key, algorithms=[alg]).claims)
        except JoseError:
            continue
    raise OidcError(code, f"the {what}'s signature does not verify")


def _check_claims(
    claims: dict[str, Any],
    *,
    issuer: str,
    client_id: str,
    now: int | None,
    options: dict[str, Any],
    code: str,
    what: str,
) -> None:
    """`iss`, `aud` (containing the client id), `iat`, `exp`/`nbf` when present, `azp`, plus `options`."""
    registry = jwt.JWTClaimsRegistry(
        now=int(time.time()) if now is None else now,
        leeway=CLOCK_SKEW,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        iat={"essential": True},
        **options,
    )
    try:
        registry.validate(claims)
    except JoseError as error:
        raise OidcError(code, f"the {what} failed a check ({error.error}: {error.description})") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != client_id:
        raise OidcError(code, f"the {what}'s azp is not this client")


class UnknownKeyId(OidcError):
    """Signed with a kid the cached JWKS lacks: the caller may refetch the JWKS once (rotation)."""


def _candidate_keys(keys: KeySet, header: dict[str, Any], code: str) -> list[Any]:
    kid = header.get("kid")
    usable = [k for k in keys if k.get("use") in (None, "sig")]
    if kid is not None:
        matches = [k for k in usable if k.kid == kid]
        if not matches:
            raise UnknownKeyId(code, "the token is signed with a key the IdP does not publish")
        return matches
    kty = _KTY_FOR_ALG_PREFIX.get(str(header.get("alg", ""))[:2])
    return [k for k in usable if k.key_type == kty]
