"""The OpenID Connect relying party: discovery, URLs, code exchange, id-token checks, revocation.

Free of Flask globals so it can be unit-tested and reused by the CLI. The protocol work is
Authlib's (`OAuth2Session`) and joserfc's (JWS, JWT claims); this module only decides which
checks apply, following the specs rather than one IdP's habits: issuers with a path or a
trailing slash, any asymmetric algorithm the IdP advertises (or HMAC with the client secret),
JWKS keys with or without `kid`, optional claims, terse error bodies.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core.util import create_half_hash
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

from .errors import BffError

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
CLOCK_SKEW = 60  # seconds of leeway on exp/iat/nbf, as most relying parties allow
METADATA_TTL = 3600
JWKS_REFETCH_INTERVAL = 5  # an unknown kid refetches the JWKS at most this often
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPES = frozenset({"jwt", "logout+jwt", "application/logout+jwt"})
LOGOUT_TOKEN_MAX_AGE = 600  # seconds; for logout tokens without exp
_KTY_FOR_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP", "HS": "oct"}


class OidcError(BffError):
    """The IdP refused, or answered something that fails a check. `status` is ours to send."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(status, code, description)


class IdpUnavailable(OidcError):
    def __init__(self, description: str) -> None:
        super().__init__("idp_unavailable", description, status=502)


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None
    id_token_algorithms: tuple[str, ...] = ("RS256",)
    token_auth_methods: tuple[str, ...] = ("client_secret_basic",)
    iss_parameter_supported: bool = False

    @classmethod
    def from_document(cls, document: dict[str, Any], expected_issuer: str) -> ProviderMetadata:
        """Check a discovery document (OpenID Connect Discovery 1.0 §4.3: the issuer must match)."""
        if document.get("issuer") != expected_issuer:
            raise OidcError(
                "invalid_metadata",
                f"the IdP's metadata names issuer {document.get('issuer')!r}, expected {expected_issuer!r}",
                status=502,
            )
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not document.get(k)]
        if missing:
            raise OidcError("invalid_metadata", f"the IdP's metadata lacks {', '.join(missing)}", status=502)
        return cls(
            issuer=document["issuer"],
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            jwks_uri=document["jwks_uri"],
            userinfo_endpoint=document.get("userinfo_endpoint"),
            end_session_endpoint=document.get("end_session_endpoint"),
            revocation_endpoint=document.get("revocation_endpoint"),
            id_token_algorithms=tuple(document.get("id_token_signing_alg_values_supported") or ("RS256",)),
            token_auth_methods=tuple(document.get("token_endpoint_auth_methods_supported") or ("client_secret_basic",)),
            iss_parameter_supported=document.get("authorization_response_iss_parameter_supported") is True,
        )


def metadata_url(issuer: str) -> str:
    """Discovery URL; issuers may carry a path (`/realms/x`) or a trailing slash (Auth0)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def add_query(url: str, params: dict[str, str]) -> str:
    """Append parameters, keeping any the endpoint already has (Azure AD B2C puts `p=` there)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def build_logout_url(
    end_session_endpoint: str | None,
    *,
    client_id: str,
    post_logout_redirect_uri: str,
    state: str,
    id_token_hint: str | None = None,
) -> str:
    """RP-Initiated Logout 1.0 URL. Without an end-session endpoint there is no IdP session to
    end through the browser, so the user simply goes to the post-logout page."""
    if not end_session_endpoint:
        return post_logout_redirect_uri
    params = {"client_id": client_id, "post_logout_redirect_uri": post_logout_redirect_uri, "state": state}
    if id_token_hint:
        params["id_token_hint"] = id_token_hint
    return add_query(end_session_endpoint, params)


def select_token_auth_method(supported: Iterable[str]) -> str:
    """client_secret_basic is the spec's default; some IdPs only take client_secret_post."""
    supported = tuple(supported)
    if "client_secret_basic" in supported or "client_secret_post" not in supported:
        return "client_secret_basic"
    return "client_secret_post"


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


def parse_keys(jwks: dict[str, Any]) -> KeySet:
    """Import each key on its own, skipping kinds we cannot use, so one odd key breaks nothing."""
    imported = []
    for data in jwks.get("keys", []):
        try:
            imported.append(KeySet.import_key_set({"keys": [data]}).keys[0])
        except (JoseError, ValueError, TypeError, KeyError):
            log.warning("skipping an unusable JWKS key (kty=%s)", data.get("kty"))
    return KeySet(imported)


class Provider:
    """One IdP, as seen by this client. Metadata and keys are fetched lazily and cached."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        scopes: str,
        redirect_uri: str,
        timeout: float = 5.0,
        revocation_timeout: float = 2.0,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = scopes
        self.redirect_uri = redirect_uri
        self.timeout = timeout
        self.revocation_timeout = revocation_timeout
        self._http = requests.Session()
        self._lock = threading.Lock()
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_refreshed_at = -float(JWKS_REFETCH_INTERVAL)

    # Discovery and keys -------------------------------------------------------------------

    @property
    def metadata(self) -> ProviderMetadata:
        with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_TTL:
                document = self._get_json(metadata_url(self.issuer), "metadata")
                self._metadata = ProviderMetadata.from_document(document, self.issuer)
                self._metadata_at = time.monotonic()
            return self._metadata

    def keys(self, refresh: bool = False) -> KeySet:
        """The IdP's signing keys. `refresh` (an unknown kid) refetches them, at most once per
        JWKS_REFETCH_INTERVAL, so tokens with made-up kids cannot make us hammer the IdP."""
        with self._lock:
            keys = self._keys
            if refresh and time.monotonic() - self._keys_refreshed_at < JWKS_REFETCH_INTERVAL:
                refresh = False
            if refresh:
                self._keys_refreshed_at = time.monotonic()
        if keys is not None and not refresh:
            return keys
        keys = parse_keys(self._get_json(self.metadata.jwks_uri, "JWKS"))
        with self._lock:
            self._keys = keys
        return keys

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._http.get(url, timeout=self.timeout, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError):
            raise IdpUnavailable(f"the IdP's {what} could not be fetched") from None
        if not isinstance(document, dict):
            raise IdpUnavailable(f"the IdP's {what} is not a JSON object")
        return document

    # Sign-in --------------------------------------------------------------------------------

    def _oauth_client(self, timeout: float) -> OAuth2Session:
        return OAuth2Session(
            client_id=self.client_id,
            client_secret=self._client_secret,
            scope=self.scopes,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=select_token_auth_method(self.metadata.token_auth_methods),
            revocation_endpoint_auth_method=select_token_auth_method(self.metadata.token_auth_methods),
            default_timeout=timeout,
        )

    def authorization_url(self, *, state: str, nonce: str, code_verifier: str, prompt: str | None = None) -> str:
        extra = {"prompt": prompt} if prompt else {}
        with self._oauth_client(self.timeout) as client:
            url, _ = client.create_authorization_url(
                self.metadata.authorization_endpoint, state=state, code_verifier=code_verifier, nonce=nonce, **extra
            )
        return url

    def exchange_code(self, code: str, code_verifier: str) -> dict[str, Any]:
        """Authorization code → token response. Refusals keep the IdP's error code, not its text."""
        with self._oauth_client(self.timeout) as client:
            try:
                token = client.fetch_token(
                    self.metadata.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
            except OAuthError as error:
                raise OidcError(
                    "invalid_grant" if error.error == "invalid_grant" else "token_request_failed",
                    "The identity provider refused the sign-in code (already used, expired or not ours).",
                ) from None
            except requests.RequestException:
                raise IdpUnavailable("the IdP's token endpoint could not be reached") from None
            except ValueError:
                raise OidcError("token_request_failed", "the IdP's token response is not JSON", 502) from None
        if not token.get("access_token") or not token.get("id_token"):
            raise OidcError("token_request_failed", "the IdP's token response lacks an access or id token", 502)
        return dict(token)

    def verify_id_token(self, id_token: str, *, nonce: str | None, access_token: str | None = None) -> dict[str, Any]:
        return self._with_key_refetch(validate_id_token, id_token, nonce=nonce, access_token=access_token)

    def verify_logout_token(self, logout_token: str) -> dict[str, Any]:
        return self._with_key_refetch(validate_logout_token, logout_token)

    def _with_key_refetch(self, validate, token: str, **extra: Any) -> dict[str, Any]:
        """Validate with the cached keys; an unknown kid refetches the JWKS once (key rotation)."""
        check = dict(
            issuer=self.issuer,
            client_id=self.client_id,
            client_secret=self._client_secret,
            algorithms=self.metadata.id_token_algorithms,
            **extra,
        )
        try:
            return validate(token, keys=self.keys(), **check)
        except UnknownKeyId:
            return validate(token, keys=self.keys(refresh=True), **check)

    def userinfo(self, access_token: str) -> dict[str, Any]:
        endpoint = self.metadata.userinfo_endpoint
        if not endpoint:
            return {}
        try:
            response = self._http.get(
                endpoint,
                timeout=self.timeout,
                headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            )
            response.raise_for_status()
            claims = response.json()
        except (requests.RequestException, ValueError):
            raise IdpUnavailable("the IdP's userinfo endpoint failed") from None
        return claims if isinstance(claims, dict) else {}

    # Sign-out -------------------------------------------------------------------------------

    def revoke_refresh_token(self, refresh_token: str) -> bool:
        """RFC 7009, bounded by the revocation timeout. Best effort: False when it did not happen."""
        try:
            endpoint = self.metadata.revocation_endpoint
        except OidcError:
            return False
        if not endpoint:
            return False
        try:
            with self._oauth_client(self.revocation_timeout) as client:
                response = client.revoke_token(endpoint, token=refresh_token, token_type_hint="refresh_token")  # noqa: S106
            ok = response.status_code == 200
        except requests.RequestException:
            ok = False
        if not ok:
            log.warning("refresh token revocation at the IdP did not succeed")
        return ok

    def logout_url(self, *, post_logout_redirect_uri: str, state: str, id_token_hint: str | None = None) -> str:
        try:
            endpoint = self.metadata.end_session_endpoint
        except OidcError:
            log.warning("IdP metadata unavailable: logout ends the BFF session only")
            endpoint = None
        return build_logout_url(
            endpoint,
            client_id=self.client_id,
            post_logout_redirect_uri=post_logout_redirect_uri,
            state=state,
            id_token_hint=id_token_hint,
        )
