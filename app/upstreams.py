"""`BFF_API_UPSTREAMS`: the APIs behind `/api/<name>/`, each a base URL and, optionally, which
token it receives (DESIGN §10) and the headers it receives and returns beyond the proxy's
allow-lists."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .env import ConfigError
from .proxy_headers import never_forwarded, never_relayed

UPSTREAM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
UPSTREAM_KEYS = ("url", "token", "resource", "scope", "forward_headers", "return_headers")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token
# Which token an upstream receives: the signed-in user's (none: 401), the user's when someone is
# signed in (else no Authorization), the BFF's own client-credentials token, or none at all.
TOKEN_POLICIES = ("user", "user_or_none", "client", "none")
EXAMPLE = '{"orders": "https://api/v1"}'


@dataclass(frozen=True)
class Upstream:
    """An API behind /api/<name>/: its base URL (no trailing slash), its token policy and the
    RFC 8707 resource and scope that select its token (None: the IdP's default), and the headers
    (lower-case names) it receives from the browser and returns to it beyond the allow-lists."""

    url: str
    forward_headers: frozenset[str] = frozenset()
    return_headers: frozenset[str] = frozenset()
    policy: str = "user"  # the object form's "token": one of TOKEN_POLICIES
    resource: str | None = None
    scope: str | None = None

    @property
    def user_token(self) -> bool:
        return self.policy in ("user", "user_or_none")


def load_upstreams(environ: Mapping[str, str]) -> dict[str, Upstream]:
    """`{"name": "https://api.example.com/base"}`: /api/<name>/<path> goes to base + /<path>,
    with the signed-in user's token. A value may also be an object: `{"url": "https://…",
    "token": "client", "resource": "https://api.example.com", "scope": "read",
    "forward_headers": ["X-Tenant"], "return_headers": ["X-Page-Count"]}`.
    Every mistake is reported, one line each."""
    raw = environ.get("BFF_API_UPSTREAMS", "").strip()
    if not raw:
        return {}
    try:
        upstreams = json.loads(raw, object_pairs_hook=_no_repeated_names)
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"BFF_API_UPSTREAMS: must be a JSON object such as {EXAMPLE}") from None
    if not isinstance(upstreams, dict):
        raise ConfigError(f"BFF_API_UPSTREAMS: must be a JSON object such as {EXAMPLE}")
    loaded, errors = {}, []
    for name, value in upstreams.items():
        problems: list[str] = []
        upstream = _upstream(name, value, problems)
        errors += [f"BFF_API_UPSTREAMS: {name!r}: {problem}" for problem in problems]
        if upstream is not None:
            loaded[name] = upstream
    if errors:
        raise ConfigError("\n".join(errors))
    return loaded


def _no_repeated_names(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json.loads keeps the last of two equal names: here that would be a silent override."""
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise ConfigError(f"BFF_API_UPSTREAMS: {name!r} is named twice (the last would silently win)")
        seen.add(name)
    return dict(pairs)


def _upstream(name: str, value: object, problems: list[str]) -> Upstream | None:
    if not UPSTREAM_NAME.fullmatch(name):
        problems.append("a name must be lowercase letters, digits, - or _")
    if not isinstance(value, dict):
        value = {"url": value}
    problems += [
        f"unknown key {key!r} ({', '.join(UPSTREAM_KEYS)} are known)" for key in value if key not in UPSTREAM_KEYS
    ]
    base = value.get("url")
    if not _absolute(base, ("http", "https")):
        problems.append("'url' must be an absolute http(s) URL without query or fragment")
    policy = value.get("token", "user")
    if policy not in TOKEN_POLICIES:
        problems.append(f"'token' must be one of {', '.join(TOKEN_POLICIES)}")
    resource, scope = value.get("resource"), value.get("scope")
    if resource is not None and not _absolute(resource, None):
        problems.append(
            "'resource' must be an absolute URI without fragment (RFC 8707), such as https://api.example.com"
        )
    if scope is not None and (not isinstance(scope, str) or not all(map(SCOPE_TOKEN.fullmatch, scope.split() or [""]))):
        problems.append("'scope' must be space-separated scope names")
    if policy == "none" and (resource is not None or scope is not None):
        problems.append("'resource' and 'scope' choose a token, and token 'none' sends none")
    forward = _header_names(value, "forward_headers", never_forwarded, "forwarded", problems)
    relay = _header_names(value, "return_headers", never_relayed, "relayed", problems)
    if problems:
        return None
    return Upstream(
        str(base).rstrip("/"),
        forward,
        relay,
        str(policy),
        str(resource) if resource is not None else None,
        " ".join(str(scope).split()) if scope is not None else None,
    )


def absolute_uri(value: object) -> bool:
    """RFC 8707 §2: a resource is an absolute URI without a fragment."""
    return _absolute(value, None)


def _absolute(value: object, schemes: tuple[str, ...] | None) -> bool:
    """An absolute URI (`schemes`: one of these, with a host, no query) and never a fragment."""
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        return False
    parts = urlsplit(value)
    if not parts.scheme or "#" in value:
        return False
    if schemes is None:
        return True
    return parts.scheme in schemes and bool(parts.hostname) and not parts.query


def _header_names(
    value: dict, key: str, refused: Callable[[str], bool], verb: str, problems: list[str]
) -> frozenset[str]:
    headers = value.get(key, [])
    if not isinstance(headers, list) or not all(isinstance(header, str) for header in headers):
        problems.append(f"{key} must be a list of header names")
        return frozenset()
    for header in headers:
        if not HEADER_NAME.fullmatch(header):
            problems.append(f"{header!r} is not a valid header name")
        elif refused(header):
            problems.append(f"header {header!r} is never {verb}")
    return frozenset(header.lower() for header in headers)
