"""The shapes of requests to the IdP's endpoints and of its answers, apart from the JOSE checks
(jwt_checks.py): URLs with parameters, the logout URL, client_secret_basic done right, the
error code of a refusal, a PAR answer. Pure, so that every IdP's variety is unit-tested."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import requests

from .errors import IdpUnavailable, OidcError


def add_query(url: str, params: dict[str, str] | Iterable[tuple[str, str]]) -> str:
    """Append parameters (a name may repeat, as RFC 8707's `resource`), keeping any the endpoint
    already has (Azure AD B2C puts `p=` there)."""
    parts = urlsplit(url)
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    query = parse_qsl(parts.query, keep_blank_values=True) + pairs
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


MAX_LIFETIME = 366 * 24 * 3600  # a token claimed to last longer than a year is held for a year


def token_lifetime(expires_in: object) -> int | None:
    """A token response's `expires_in` (RFC 6749 §5.1) as whole seconds between 0 (already
    expired) and a year, or None when there is none or it is not a number (an infinity, a
    word). Some IdPs send it as a string of digits."""
    if isinstance(expires_in, str) and re.fullmatch(r"[0-9]{1,12}", expires_in.strip()):  # not "²"
        value = int(expires_in.strip())
    elif isinstance(expires_in, int) and not isinstance(expires_in, bool):
        value = expires_in
    elif isinstance(expires_in, float) and math.isfinite(expires_in):
        value = int(expires_in)
    else:
        return None
    return max(0, min(value, MAX_LIFETIME))


def expiry(expires_in: object, issued_at: int) -> int | None:
    """When a token issued at `issued_at` (Unix seconds) expires, by its `expires_in`; None: unknown."""
    lifetime = token_lifetime(expires_in)
    return None if lifetime is None else issued_at + lifetime


def token_selection(resource: str | None, scope: str | None) -> dict[str, str]:
    """The token request's RFC 8707 `resource` and `scope`, when set."""
    return {k: v for k, v in (("resource", resource), ("scope", scope)) if v}


def oauth_error_code(response: requests.Response) -> str:
    """The OAuth error code of a refusal (RFC 6749 §5.2), for logs and decisions; terse IdPs send
    none, or HTML."""
    try:
        code = response.json().get("error")
    except (ValueError, AttributeError):
        return "invalid_request"
    return code if isinstance(code, str) and code.isascii() and len(code) <= 64 else "invalid_request"


def client_secret_basic(client: Any, method: str, uri: str, headers: dict, body: str) -> tuple[str, dict, str]:
    """RFC 6749 §2.3.1: form-encode the client id and secret, then Basic. Authlib sends them raw,
    which breaks secrets with `%`, `+` or `:` at IdPs that decode them as the spec says."""
    credentials = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret or '')}"
    headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return uri, headers, body


def par_request_uri(response: requests.Response) -> str:
    """RFC 9126 §2.2: 201 with `request_uri`; a 4xx is the IdP refusing this sign-in request."""
    if response.status_code == 429:
        raise IdpUnavailable("the IdP's pushed authorization request endpoint asks us to slow down (429)")
    if 400 <= response.status_code < 500:
        code = oauth_error_code(response)
        raise OidcError("par_refused", f"The identity provider refused the sign-in request ({code}).", 502)
    try:
        response.raise_for_status()
        request_uri = response.json().get("request_uri")
    except (requests.RequestException, ValueError, AttributeError):
        raise IdpUnavailable("the IdP's pushed authorization request endpoint failed") from None
    if not isinstance(request_uri, str) or not request_uri:
        raise IdpUnavailable("the IdP's pushed authorization response lacks a request_uri")
    return request_uri
