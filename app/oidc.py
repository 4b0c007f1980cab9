"""The OpenID Connect relying party: URLs, code exchange, id-token checks, refresh, revocation.

Free of Flask globals so it can be unit-tested and reused by the CLI (the JWT checks themselves
are in jwt_checks.py, the IdP's documents in idp_documents.py). The protocol work is
Authlib's (`OAuth2Session`) and joserfc's (JWS, JWT claims); this module only decides which
checks apply, following the specs rather than one IdP's habits: issuers with a path or a
trailing slash, any asymmetric algorithm the IdP advertises (or HMAC with the client secret),
JWKS keys with or without `kid`, optional claims, terse error bodies.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from joserfc.jwk import KeySet

from .errors import IdpUnavailable, OidcError, RefreshRefused
from .idp_cache import BACKOFF_INITIAL, BACKOFF_MAX, CachedDocument
from .idp_documents import ProviderMetadata, metadata_url, parse_jwks
from .jwt_checks import UnknownKeyId, validate_id_token, validate_logout_token

log = logging.getLogger(__name__)

METADATA_TTL = 3600
JWKS_REFETCH_INTERVAL = 5  # after a refetch for an unknown kid, the next one waits this long


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


def client_secret_basic(client: Any, method: str, uri: str, headers: dict, body: str) -> tuple[str, dict, str]:
    """RFC 6749 §2.3.1: form-encode the client id and secret, then Basic. Authlib sends them raw,
    which breaks secrets with `%`, `+` or `:` at IdPs that decode them as the spec says."""
    credentials = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret or '')}"
    headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return uri, headers, body


class Provider:
    """One IdP, as seen by this client. Metadata and keys are fetched lazily and cached; during an
    IdP outage the last good copies are served and failed fetches back off (idp_cache.py)."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        scopes: str,
        redirect_uri: str,
        timeout: float,
        revocation_timeout: float,
        metadata_ttl: float = METADATA_TTL,
        jwks_refetch_interval: float = JWKS_REFETCH_INTERVAL,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = scopes
        self.redirect_uri = redirect_uri
        self.timeout = timeout
        self.revocation_timeout = revocation_timeout
        self.metadata_ttl = metadata_ttl
        self.jwks_refetch_interval = jwks_refetch_interval
        self._http = requests.Session()
        self._metadata = CachedDocument(
            "metadata", self._fetch_metadata, wait=timeout, backoff_initial=backoff_initial, backoff_max=backoff_max
        )
        self._keys = CachedDocument(
            "JWKS", self._fetch_keys, wait=timeout, backoff_initial=backoff_initial, backoff_max=backoff_max
        )
        self._lock = threading.Lock()  # guards _keys_refreshed_at; no network call is made under it
        self._keys_refreshed_at = -math.inf

    # Discovery and keys -------------------------------------------------------------------

    @property
    def metadata(self) -> ProviderMetadata:
        return self._metadata.get(max_age=self.metadata_ttl)

    def keys(self, refresh: bool = False) -> KeySet:
        """The IdP's signing keys. `refresh` (an unknown kid) refetches them, at most once per
        JWKS_REFETCH_INTERVAL, so tokens with made-up kids cannot make us hammer the IdP."""
        with self._lock:
            if refresh and time.monotonic() - self._keys_refreshed_at >= self.jwks_refetch_interval:
                self._keys_refreshed_at = time.monotonic()
            else:
                refresh = False
        return self._keys.get(max_age=0 if refresh else math.inf)

    def _fetch_metadata(self) -> ProviderMetadata:
        return ProviderMetadata.from_document(self._get_json(metadata_url(self.issuer), "metadata"), self.issuer)

    def _fetch_keys(self) -> KeySet:
        return parse_jwks(self._get_json(self.metadata.jwks_uri, "JWKS"))

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
        client = OAuth2Session(
            client_id=self.client_id,
            client_secret=self._client_secret,
            scope=self.scopes,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=select_token_auth_method(self.metadata.token_auth_methods),
            revocation_endpoint_auth_method=select_token_auth_method(self.metadata.token_auth_methods),
            default_timeout=timeout,
        )
        client.register_client_auth_method(("client_secret_basic", client_secret_basic))
        return client

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
        """Extra profile claims, best effort: an access token meant for an API (Entra, resource
        indicators) may not be accepted here, and a sign-in should not fail for want of a name."""
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
        except (requests.RequestException, ValueError) as error:
            log.warning("userinfo unavailable (%s): using the id token's claims only", type(error).__name__)
            return {}
        return claims if isinstance(claims, dict) else {}

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Refresh grant (RFC 6749 §6). Any 4xx, whatever its body, is `RefreshRefused`; no answer
        or a 5xx is `IdpUnavailable`, since the session may still be good."""
        with self._oauth_client(self.timeout) as client:
            try:
                response = client.post(
                    self.metadata.token_endpoint,
                    data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                    auth=client.client_auth(client.token_endpoint_auth_method),
                    headers={"Accept": "application/json"},
                    withhold_token=True,
                )
            except requests.RequestException:
                raise IdpUnavailable("the IdP's token endpoint could not be reached") from None
        if 400 <= response.status_code < 500:
            raise RefreshRefused()
        try:
            response.raise_for_status()
            tokens = response.json()
        except (requests.RequestException, ValueError):
            raise IdpUnavailable("the IdP's token endpoint failed") from None
        if not isinstance(tokens, dict) or not tokens.get("access_token"):
            raise IdpUnavailable("the IdP's refresh response lacks an access token")
        return tokens

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

    def end_session_endpoint(self) -> str | None:
        """RP-Initiated Logout's endpoint, if the IdP has one (and its metadata can be had)."""
        try:
            return self.metadata.end_session_endpoint
        except OidcError:
            log.warning("IdP metadata unavailable: logout ends the BFF session only")
            return None

    def logout_url(self, *, post_logout_redirect_uri: str, state: str, id_token_hint: str | None = None) -> str:
        return build_logout_url(
            self.end_session_endpoint(),
            client_id=self.client_id,
            post_logout_redirect_uri=post_logout_redirect_uri,
            state=state,
            id_token_hint=id_token_hint,
        )
