"""The OpenID Connect relying party: URLs, code exchange, id-token checks, refresh, revocation.

Free of Flask globals so it can be unit-tested and reused by the CLI (the JWT checks themselves
are in jwt_checks.py, the IdP's documents in idp_documents.py). The protocol work is
Authlib's (`OAuth2Session`) and joserfc's (JWS, JWT claims); this module only decides which
checks apply, following the specs rather than one IdP's habits: issuers with a path or a
trailing slash, any asymmetric algorithm the IdP advertises (or HMAC with the client secret),
JWKS keys with or without `kid`, optional claims, terse error bodies.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from joserfc.jwk import KeySet

from .client_auth import ClientConfig, ClientKey, MethodMismatch
from .errors import IdpUnavailable, OidcError, RefreshRefused, TokenRefused
from .idp_cache import BACKOFF_INITIAL, BACKOFF_MAX, CachedDocument, CallGate
from .idp_documents import ProviderMetadata, metadata_url, parse_jwks
from .idp_requests import (
    add_query,
    build_logout_url,
    oauth_error_code,
    par_request_uri,
    token_selection,
)
from .jwt_checks import UnknownKeyId, validate_id_token, validate_logout_token

log = logging.getLogger(__name__)

METADATA_TTL = 3600
PAR_IN_FLIGHT = 4  # per process: half of gunicorn's default threads at most wait on a slow PAR endpoint
JWKS_REFETCH_INTERVAL = 5  # after a refetch for an unknown kid, the next one waits this long


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
        client_keys: tuple[ClientKey, ...] = (),
        client_auth: str = "auto",
        assertion_audience: str = "token_endpoint",
        par: str = "auto",
        resources: tuple[str, ...] = (),
        metadata_ttl: float = METADATA_TTL,
        jwks_refetch_interval: float = JWKS_REFETCH_INTERVAL,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self._client = ClientConfig(
            client_auth, bool(client_secret), client_keys[0] if client_keys else None, assertion_audience, par
        )  # the first key signs (DESIGN §10)
        # RFC 8707: the sign-in's own resource first, then those other upstreams' user tokens need.
        self._resources = resources
        self._sign_in_resource = resources[0] if resources else None
        self._checked: tuple[ProviderMetadata, str | OidcError] | None = None
        # Every sign-in start, anonymous ones included, pushes one request: bounded and backed off.
        self._par_gate = CallGate(
            "pushed authorization request endpoint",
            PAR_IN_FLIGHT,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
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
    def sign_in_resources(self) -> tuple[str, ...]:
        """The RFC 8707 resources every sign-in asks for (its own first)."""
        return self._resources

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

    # Client authentication and PAR, as configured and as this IdP accepts them --------------

    def client_auth_method(self) -> str:
        """The method for the token, revocation and PAR endpoints, decided once per metadata
        document. A configuration the IdP cannot accept is an `OidcError` naming the variable
        (logged once; /readyz reports it)."""
        metadata = self.metadata
        if self._checked is None or self._checked[0] is not metadata:
            try:
                self._checked = (metadata, self._client.checked_method(metadata))
            except MethodMismatch as error:
                log.error("configuration does not match the IdP: %s", error)
                self._checked = (metadata, OidcError("client_misconfigured", str(error), 502))
        outcome = self._checked[1]
        if isinstance(outcome, OidcError):
            raise outcome
        return outcome

    def _oauth_client(self, timeout: float) -> OAuth2Session:
        method = self.client_auth_method()
        client = OAuth2Session(
            client_id=self.client_id,
            client_secret=self._client_secret or None,
            scope=self.scopes,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=method,
            revocation_endpoint_auth_method=method,
            default_timeout=timeout,
        )
        self._client.register(client, self.metadata)
        return client

    # Sign-in --------------------------------------------------------------------------------

    def authorization_url(self, *, state: str, nonce: str, code_verifier: str, prompt: str | None = None) -> str:
        """The URL the browser is sent to. With PAR (RFC 9126) the parameters are pushed to the
        IdP first, with the client's authentication, and the URL carries only `client_id` and
        the `request_uri` the IdP answered."""
        extra = {"prompt": prompt} if prompt else {}
        endpoint = self.metadata.authorization_endpoint
        with self._oauth_client(self.timeout) as client:
            url, _ = client.create_authorization_url(
                endpoint, state=state, code_verifier=code_verifier, nonce=nonce, **extra
            )
            url = add_query(url, [("resource", resource) for resource in self._resources])
            par = self._client.par_endpoint(self.metadata)
            if not par:
                return url
        own = set(parse_qsl(urlsplit(endpoint).query, keep_blank_values=True))
        params = [pair for pair in parse_qsl(urlsplit(url).query, keep_blank_values=True) if pair not in own]

        def push() -> str:
            return par_request_uri(self._authenticated_post(par, params, "pushed authorization request endpoint"))

        return add_query(endpoint, {"client_id": self.client_id, "request_uri": self._par_gate.call(push)})

    def exchange_code(self, code: str, code_verifier: str) -> dict[str, Any]:
        """Authorization code → token response. Refusals keep the IdP's error code, not its text."""
        with self._oauth_client(self.timeout) as client:
            try:
                token = client.fetch_token(
                    self.metadata.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                    **token_selection(self._sign_in_resource, None),
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

    def refresh(self, refresh_token: str, *, resource: str | None = None, scope: str | None = None) -> dict[str, Any]:
        """Refresh grant (RFC 6749 §6), for the sign-in's own token or for another `resource`
        (RFC 8707 §2.2) or `scope`. For the sign-in's token any 4xx, whatever its body, is
        `RefreshRefused`; for another resource or scope all but `invalid_scope` are (the refresh
        token may be spent), which is `TokenRefused`. No answer or a 5xx is `IdpUnavailable`, since the session
        may still be good."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        selection = (
            token_selection(resource, scope) if resource or scope else token_selection(self._sign_in_resource, None)
        )
        try:
            return self._token_request(form | selection)
        except TokenRefused as refused:
            # Strict IdPs spend the refresh token before checking the resource (node oidc-provider
            # rotates it, then answers invalid_target): only a refused scope, checked first
            # everywhere, leaves it good. Any other refusal ends the session, as for the sign-in's.
            if (resource or scope) and refused.idp_error == "invalid_scope":
                raise
            raise RefreshRefused() from None

    def client_credentials(self, *, resource: str | None = None, scope: str | None = None) -> dict[str, Any]:
        """The BFF's own token (RFC 6749 §4.4) for an upstream whose policy is `client`."""
        return self._token_request({"grant_type": "client_credentials"} | token_selection(resource, scope))

    def _authenticated_post(self, url: str, form: Any, what: str) -> requests.Response:
        """A form POST to one of the IdP's endpoints with the client's authentication."""
        with self._oauth_client(self.timeout) as client:
            try:
                return client.post(
                    url,
                    data=form,
                    auth=client.client_auth(client.token_endpoint_auth_method),
                    headers={"Accept": "application/json"},
                    withhold_token=True,
                )
            except requests.RequestException:
                raise IdpUnavailable(f"the IdP's {what} could not be reached") from None

    def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        """POST to the token endpoint with the client's authentication. A 4xx is `TokenRefused`
        with the IdP's error code (or `invalid_request` when its body has none)."""
        response = self._authenticated_post(self.metadata.token_endpoint, form, "token endpoint")
        if 400 <= response.status_code < 500:
            raise TokenRefused(oauth_error_code(response))
        try:
            response.raise_for_status()
            tokens = response.json()
        except (requests.RequestException, ValueError):
            raise IdpUnavailable("the IdP's token endpoint failed") from None
        if (
            not isinstance(tokens, dict)
            or not isinstance(tokens.get("access_token"), str)
            or not tokens["access_token"]
        ):
            raise IdpUnavailable("the IdP's token response lacks an access token")
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
