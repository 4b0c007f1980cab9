"""The sign-in flow: start an authorization-code + PKCE request, and finish it safely.

Each attempt has its own `state`, stored server-side with its PKCE verifier, nonce and return
URL, and bound to the browser that started it by a cookie named after that state (as ASP.NET
does with its correlation cookies). Two tabs signing in at once therefore never overwrite each
other, and a callback URL sent to someone else's browser signs nobody in (login CSRF).
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BffError
from .oidc import Provider
from .sessions import LoginAttempts, digest

PROMPT_VALUES = frozenset({"none", "login", "consent", "select_account", "create"})
PROTOCOL_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "s_hash"})
ID_TOKEN_OWNED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "auth_time", "sid", "azp", "acr", "amr"})
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


@dataclass(frozen=True)
class LoginStart:
    authorization_url: str
    binding_cookie: str
    binding_value: str


@dataclass(frozen=True)
class SignedIn:
    claims: dict[str, Any]
    tokens: dict[str, Any]
    return_url: str
    binding_cookie: str


def binding_cookie_name(session_cookie: str, state: str) -> str:
    """Per-attempt cookie, e.g. `__Host-bff-login-3Fq...`; the prefix keeps `__Host-` rules."""
    return f"{session_cookie}-login-{digest(state)[:12]}"


def parse_prompt(raw: str | None) -> str | None:
    if not raw:
        return None
    values = raw.split()
    if not values or any(v not in PROMPT_VALUES for v in values) or ("none" in values and len(values) > 1):
        allowed = ", ".join(sorted(PROMPT_VALUES))
        raise BffError(400, "invalid_prompt", f"prompt must be a space-separated list of: {allowed}.")
    return " ".join(values)


def begin_login(
    provider: Provider, attempts: LoginAttempts, *, return_url: str, prompt: str | None, session_cookie: str
) -> LoginStart:
    state = secrets.token_urlsafe(32)
    binding = secrets.token_urlsafe(32)
    code_verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43-128
    nonce = secrets.token_urlsafe(32)
    url = provider.authorization_url(state=state, nonce=nonce, code_verifier=code_verifier, prompt=prompt)
    attempts.put(
        state,
        {"code_verifier": code_verifier, "nonce": nonce, "return_url": return_url, "binding": digest(binding)},
    )
    return LoginStart(url, binding_cookie_name(session_cookie, state), binding)


def complete_login(
    provider: Provider,
    attempts: LoginAttempts,
    *,
    params: Mapping[str, str],
    cookies: Mapping[str, str],
    session_cookie: str,
    fetch_userinfo: bool,
) -> SignedIn:
    """Check the callback, redeem the code, validate the id token. Raises `BffError` on any failure
    before anything is stored, so a bad callback changes nothing."""
    if "error" in params:
        code = params["error"] if _ERROR_CODE.match(params["error"]) else "idp_error"
        raise BffError(400, code, f"The identity provider did not sign you in ({code}).")
    state = params.get("state", "")
    attempt = attempts.get(state) if state else None
    cookie = binding_cookie_name(session_cookie, state)
    if attempt is None or not hmac.compare_digest(digest(cookies.get(cookie, "")), attempt["binding"]):
        raise BffError(
            400,
            "invalid_state",
            "This sign-in attempt is unknown, expired or was started in another browser. Please sign in again.",
        )
    _check_issuer_parameter(provider, params.get("iss"))
    code = params.get("code")
    if not code:
        raise BffError(400, "invalid_request", "The identity provider's answer carries no authorization code.")
    if not attempts.consume(state):
        raise BffError(400, "invalid_state", "This sign-in attempt was already completed.")

    tokens = provider.exchange_code(code, attempt["code_verifier"])
    claims = provider.verify_id_token(tokens["id_token"], nonce=attempt["nonce"], access_token=tokens["access_token"])
    if fetch_userinfo:
        claims = merge_userinfo(claims, provider.userinfo(tokens["access_token"]))
    return SignedIn(claims=claims, tokens=tokens, return_url=attempt["return_url"], binding_cookie=cookie)


def _check_issuer_parameter(provider: Provider, iss: str | None) -> None:
    """RFC 9207: a mismatched `iss` means a mix-up attack; a missing one is refused when advertised."""
    if iss is None and not provider.metadata.iss_parameter_supported:
        return
    if iss != provider.issuer:
        raise BffError(400, "invalid_issuer", "The sign-in answer did not come from the configured identity provider.")


def merge_userinfo(id_claims: dict[str, Any], userinfo: dict[str, Any]) -> dict[str, Any]:
    """Userinfo adds profile claims; it must be about the same subject (OIDC Core §5.3.4) and
    never overrides what the signed id token says about the session itself."""
    if not userinfo or userinfo.get("sub") != id_claims["sub"]:
        return id_claims
    extra = {k: v for k, v in userinfo.items() if k not in ID_TOKEN_OWNED_CLAIMS}
    return {**id_claims, **extra}


def public_claims(claims: dict[str, Any]) -> dict[str, Any]:
    """Claims the SPA may see: everything but the protocol-internal hashes and nonce."""
    return {k: v for k, v in claims.items() if k not in PROTOCOL_CLAIMS}
