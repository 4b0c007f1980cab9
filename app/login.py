"""The sign-in flow: start an authorization-code + PKCE request, and finish it safely.

Nothing is stored server-side before the IdP answers: each attempt (PKCE verifier, nonce, return
URL, prompt, start time) is sealed (AES-GCM) into a cookie named after its `state`, as ASP.NET's
correlation cookies and oauth2-proxy's CSRF cookies do. Anonymous traffic therefore cannot grow
Redis, two tabs signing in at once never overwrite each other, and a callback URL sent to
someone else's browser signs nobody in (login CSRF). A browser keeps at most MAX_ATTEMPTS of
these cookies, so abandoned attempts cannot swell its Cookie header until every request fails.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .crypto import CookieSealer
from .errors import BffError
from .keyspace import digest
from .oidc import Provider

LOGIN_TTL = 600  # seconds a person has to finish signing in at the IdP
MAX_ATTEMPTS = 3  # login cookies a browser keeps; a fourth attempt drops the oldest
# With a return URL of at most 1 024 ASCII characters an attempt cookie is about 1.8 KB; three of
# them and the session cookie stay well within the 8 KB header line of gunicorn and nginx.
MAX_ATTEMPT_COOKIE = 2048
MAX_DROPS = 10  # old attempt cookies deleted per response (a browser never holds more than a few)
PROMPT_VALUES = frozenset({"none", "login", "consent", "select_account", "create"})
PROTOCOL_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "s_hash"})
ID_TOKEN_OWNED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "auth_time", "sid", "azp", "acr", "amr"})
log = logging.getLogger(__name__)

_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_ATTEMPT_SUFFIX = re.compile(r"[A-Za-z0-9_-]{12}")


@dataclass(frozen=True)
class Attempt:
    """One sign-in in progress, as sealed into its cookie."""

    state_digest: str
    code_verifier: str
    nonce: str
    return_url: str
    prompt: str | None
    started_ms: int
    probe: bool = False  # a logout's check that the IdP session is gone: never signs anyone in


@dataclass(frozen=True)
class LoginStart:
    authorization_url: str
    cookie_name: str
    cookie_value: str
    dropped_cookies: tuple[str, ...]  # older attempts' cookies for the browser to delete


@dataclass(frozen=True)
class SignedIn:
    claims: dict[str, Any]
    tokens: dict[str, Any]
    return_url: str


@dataclass(frozen=True)
class ProbeResult:
    """What a `prompt=none` probe after logout learnt: `complete` (the IdP has no session for this
    browser), `idp_session_alive` or `unconfirmed`. Its code, if any, is never redeemed."""

    outcome: str
    return_url: str


# OpenID Connect Core §3.1.2.6: only login_required says there is no session; a code, or a
# request for consent or account selection, says there still is one.
PROBE_ALIVE_ERRORS = frozenset({"consent_required", "account_selection_required"})


def probe_outcome(params: Mapping[str, str], issuer_ok: bool) -> str:
    error = params.get("error")
    if not issuer_ok or (error is None and not params.get("code")):
        return "unconfirmed"
    if error is None or error in PROBE_ALIVE_ERRORS:
        return "idp_session_alive"
    return "complete" if error == "login_required" else "unconfirmed"


def _is_attempt_cookie(name: str, prefix: str) -> bool:
    return name.startswith(prefix) and bool(_ATTEMPT_SUFFIX.fullmatch(name[len(prefix) :]))


def attempt_cookie_name(prefix: str, state: str) -> str:
    """Per-attempt cookie, e.g. `__Secure-bff-login-3Fq...` (`Settings.attempt_cookie_prefix`)."""
    return f"{prefix}{digest(state)[:12]}"


def seal_attempt(sealer: CookieSealer, cookie_name: str, attempt: Attempt) -> str:
    fields = asdict(attempt)
    if not attempt.probe:
        del fields["probe"]  # as older instances seal it, so that they open it during a rolling deploy
    return sealer.seal(json.dumps(fields, separators=(",", ":")).encode(), cookie_name)


def open_attempt(sealer: CookieSealer, cookie_name: str, value: str, now_ms: int) -> Attempt | None:
    """The attempt sealed in this cookie, or None when it is not ours, altered or too old."""
    plaintext = sealer.open(value, cookie_name) if value else None
    if plaintext is None:
        return None
    try:
        sealed = json.loads(plaintext)
        # Only the fields this version knows: an attempt sealed by a newer instance (a rolling
        # deploy) still opens.
        attempt = Attempt(**{k: v for k, v in sealed.items() if k in Attempt.__dataclass_fields__})
    except (ValueError, TypeError, AttributeError):
        return None
    return attempt if 0 <= now_ms - attempt.started_ms <= LOGIN_TTL * 1000 else None


def attempts_to_drop(sealer: CookieSealer, cookies: Mapping[str, str], prefix: str, now_ms: int) -> list[str]:
    """Login cookies to delete before a new attempt: unreadable or expired ones, and all but the
    newest MAX_ATTEMPTS - 1 of the others (at most MAX_DROPS at a time). Only names of our own
    format count: a cookie we could never have set is not ours to answer."""
    live: list[tuple[int, str]] = []
    dropped: list[str] = []
    for name, value in cookies.items():
        if not _is_attempt_cookie(name, prefix):
            continue
        attempt = open_attempt(sealer, name, value, now_ms)
        if attempt is None:
            dropped.append(name)
        else:
            live.append((attempt.started_ms, name))
    live.sort(reverse=True)
    return (dropped + [name for _, name in live[MAX_ATTEMPTS - 1 :]])[:MAX_DROPS]


def normalize_prompt(raw: str | None) -> str | None:
    """A `prompt` value (OIDC Core §3.1.2.1), or None; ValueError with a reason otherwise."""
    if not raw:
        return None
    values = raw.split()
    if not values or any(v not in PROMPT_VALUES for v in values) or ("none" in values and len(values) > 1):
        raise ValueError(f"must be a space-separated list of: {', '.join(sorted(PROMPT_VALUES))}")
    return " ".join(values)


def login_prompt(requested: str | None, configured: str | None) -> str | None:
    """`?prompt=` overrides BFF_OIDC_PROMPT, but never to `none`: an operator who demands a prompt
    (`login` to force re-authentication, `consent` for refresh tokens) cannot be bypassed by a
    link that asks for a silent sign-in."""
    if configured and requested and "none" in requested.split():
        raise BffError(400, "invalid_prompt", "prompt=none is not allowed here: sign-ins must prompt.")
    return requested or configured


def parse_prompt(raw: str | None) -> str | None:
    try:
        return normalize_prompt(raw)
    except ValueError as error:
        raise BffError(400, "invalid_prompt", f"prompt {error}.") from None


def begin_login(
    provider: Provider,
    sealer: CookieSealer,
    *,
    return_url: str,
    prompt: str | None,
    cookie_prefix: str,
    cookies: Mapping[str, str],
    now_ms: int,
    probe: bool = False,
) -> LoginStart:
    state = secrets.token_urlsafe(32)
    code_verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43-128
    nonce = secrets.token_urlsafe(32)
    url = provider.authorization_url(state=state, nonce=nonce, code_verifier=code_verifier, prompt=prompt)
    name = attempt_cookie_name(cookie_prefix, state)
    attempt = Attempt(digest(state), code_verifier, nonce, return_url, prompt, now_ms, probe)
    value = seal_attempt(sealer, name, attempt)
    if len(value) > MAX_ATTEMPT_COOKIE:  # the return URL's limit keeps far below; never ship more
        raise BffError(400, "invalid_return_url", "returnUrl is too long.")
    dropped = attempts_to_drop(sealer, cookies, cookie_prefix, now_ms)
    return LoginStart(url, name, value, tuple(dropped))


def complete_login(
    provider: Provider,
    sealer: CookieSealer,
    *,
    params: Mapping[str, str],
    cookies: Mapping[str, str],
    cookie_prefix: str,
    fetch_userinfo: bool,
    now_ms: int,
) -> SignedIn | ProbeResult:
    """Check the callback, redeem the code, validate the id token. Raises `BffError` on any failure
    before anything is stored, so a bad callback changes nothing. The caller deletes the
    attempt's cookie whatever the outcome. A probe's callback only reports what it learnt."""
    state = params.get("state", "")
    name = attempt_cookie_name(cookie_prefix, state)
    attempt = open_attempt(sealer, name, cookies.get(name, ""), now_ms) if state else None
    if attempt is not None and not hmac.compare_digest(attempt.state_digest, digest(state)):
        attempt = None
    if attempt is not None and attempt.probe:
        return ProbeResult(probe_outcome(params, _issuer_ok(provider, params.get("iss"))), attempt.return_url)
    if "error" in params:
        code = params["error"] if _ERROR_CODE.fullmatch(params["error"]) else "idp_error"
        raise BffError(400, code, f"The identity provider did not sign you in ({code}).")
    if attempt is None:
        raise BffError(
            400,
            "invalid_state",
            "This sign-in attempt is unknown, expired or was started in another browser. Please sign in again.",
        )
    _check_issuer_parameter(provider, params.get("iss"))
    authorization_code = params.get("code")
    if not authorization_code:
        raise BffError(400, "invalid_request", "The identity provider's answer carries no authorization code.")
    # A replayed callback is refused by the IdP: a code is single use (RFC 6749 §4.1.2).
    tokens = provider.exchange_code(authorization_code, attempt.code_verifier)
    claims = provider.verify_id_token(tokens["id_token"], nonce=attempt.nonce, access_token=tokens["access_token"])
    if fetch_userinfo:
        claims = merge_userinfo(claims, provider.userinfo(tokens["access_token"]))
    return SignedIn(claims=claims, tokens=tokens, return_url=attempt.return_url)


_warned_about_refresh_tokens = False


def note_missing_refresh_token(scopes: str, tokens: Mapping[str, Any]) -> bool:
    """True when a sign-in asked for `offline_access` and got no refresh token: the session will
    end at the access token's expiry. Logged once per process, naming the likely cause."""
    global _warned_about_refresh_tokens
    if "offline_access" not in scopes.split() or tokens.get("refresh_token"):
        return False
    if not _warned_about_refresh_tokens:
        _warned_about_refresh_tokens = True
        log.warning(
            "sign-in asked for offline_access but the IdP issued no refresh token: sessions will end when "
            "their access token expires. IdPs may grant offline_access only with prompt=consent (OpenID "
            "Connect Core §11): set BFF_OIDC_PROMPT=consent, or drop offline_access from BFF_OIDC_SCOPES "
            "if your IdP issues refresh tokens without it (Keycloak)"
        )
    return True


def _issuer_ok(provider: Provider, iss: str | None) -> bool:
    """RFC 9207: a mismatched `iss` means a mix-up attack; a missing one is refused when advertised."""
    if iss is None:
        return not provider.metadata.iss_parameter_supported
    return iss == provider.issuer


def _check_issuer_parameter(provider: Provider, iss: str | None) -> None:
    if not _issuer_ok(provider, iss):
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
