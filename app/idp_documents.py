"""What the IdP publishes: its discovery metadata and its signing keys, parsed and checked.

Pure: fetching and caching them is `Provider`'s (oidc.py) and `CachedDocument`'s (idp_cache.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .errors import OidcError

log = logging.getLogger(__name__)


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
    token_auth_signing_algorithms: tuple[str, ...] | None = None  # None: not advertised
    iss_parameter_supported: bool = False
    par_endpoint: str | None = None  # RFC 9126 pushed_authorization_request_endpoint
    par_required: bool = False

    @classmethod
    def from_document(cls, document: dict[str, Any], expected_issuer: str) -> ProviderMetadata:
        """Check a discovery document (OpenID Connect Discovery 1.0 §4.3: the issuer must match)."""
        if document.get("issuer") != expected_issuer:
            raise OidcError(
                "invalid_metadata",
                f"the IdP's metadata names issuer {document.get('issuer')!r}, expected {expected_issuer!r}",
                status=502,
            )
        required = ("authorization_endpoint", "token_endpoint", "jwks_uri")
        missing = [k for k in required if not _endpoint(document, k)]
        if missing:
            raise OidcError("invalid_metadata", f"the IdP's metadata lacks a usable {', '.join(missing)}", status=502)
        return cls(
            issuer=document["issuer"],
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            jwks_uri=document["jwks_uri"],
            userinfo_endpoint=_endpoint(document, "userinfo_endpoint"),
            end_session_endpoint=_endpoint(document, "end_session_endpoint"),
            revocation_endpoint=_endpoint(document, "revocation_endpoint"),
            id_token_algorithms=tuple(document.get("id_token_signing_alg_values_supported") or ("RS256",)),
            token_auth_methods=tuple(document.get("token_endpoint_auth_methods_supported") or ("client_secret_basic",)),
            token_auth_signing_algorithms=_strings(document, "token_endpoint_auth_signing_alg_values_supported"),
            iss_parameter_supported=document.get("authorization_response_iss_parameter_supported") is True,
            par_endpoint=_endpoint(document, "pushed_authorization_request_endpoint"),
            par_required=document.get("require_pushed_authorization_requests") is True,
        )


def _strings(document: dict[str, Any], key: str) -> tuple[str, ...] | None:
    value = document.get(key)
    if not isinstance(value, list) or not value:
        return None
    return tuple(item for item in value if isinstance(item, str))


def _endpoint(document: dict[str, Any], key: str) -> str | None:
    """An endpoint URL from the metadata, if it is one: http(s), a host, nothing a URL cannot hold
    (it ends up in a form's action and a CSP on our pages). Otherwise it is treated as absent."""
    value = document.get(key)
    if not isinstance(value, str) or not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c in value for c in " \t\r\n\"'<>;,\\"):
        log.warning("ignoring the IdP's %s: not an http(s) URL", key)
        return None
    return value


def metadata_url(issuer: str) -> str:
    """Discovery URL; issuers may carry a path (`/realms/x`) or a trailing slash (Auth0)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def parse_jwks(jwks: dict[str, Any]) -> KeySet:
    """Import each key on its own, skipping kinds we cannot use, so one odd key breaks nothing."""
    imported = []
    for data in jwks.get("keys", []):
        try:
            imported.append(KeySet.import_key_set({"keys": [data]}).keys[0])
        except (JoseError, ValueError, TypeError, KeyError):
            log.warning("skipping an unusable JWKS key (kty=%s)", data.get("kty"))
    return KeySet(imported)
