"""Which headers the API proxy sends upstream and relays back: allow-lists both ways, pure.

Requests carry only end-to-end content and negotiation headers (plus those an upstream's
configuration lists); the BFF sets `Authorization` and `X-Forwarded-*` itself. Responses carry
only content, caching and validation headers (plus those configured): nothing that acts on the
SPA's origin as a whole (cookies, HSTS, Clear-Site-Data, CORS, reporting policies), nothing a
proxy in front would obey (`X-Accel-Redirect`), and never an answer a shared cache may keep.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urljoin

from .errors import BffError
from .proxy_paths import api_tail, under_base

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
     "transfer-encoding", "upgrade"}
)  # fmt: skip

# -- Requests ---------------------------------------------------------------------------------

FORWARDED_REQUEST_HEADERS = frozenset(
    {
        "accept", "accept-charset", "accept-encoding", "accept-language", "cache-control",
        "content-encoding", "content-language", "content-type", "if-match", "if-modified-since",
        "if-none-match", "if-range", "if-unmodified-since", "pragma", "range", "user-agent",
    }
)  # fmt: skip
# Never forwarded, even when an upstream's configuration lists them: they would let the browser
# speak for the proxy (client address, original URL, method override, identity) or reach hop by hop.
NEVER_FORWARDED = HOP_BY_HOP | frozenset(
    {
        "authorization", "content-length", "cookie", "forwarded", "host", "x-csrf", "x-real-ip",
        "x-original-url", "x-original-uri", "x-rewrite-url", "x-http-method-override", "x-http-method",
        "x-method-override", "x-client-ip", "x-bff-authz-secret", "x-request-id",
    }
)  # fmt: skip
NEVER_FORWARDED_PREFIXES = ("proxy-", "x-forwarded-", "x-auth-request-", "x-remote-", "x-user", "remote-")


def never_forwarded(name: str) -> bool:
    lower = name.lower()
    return lower in NEVER_FORWARDED or lower.startswith(NEVER_FORWARDED_PREFIXES)


def forwarded_request_headers(headers: Iterable[tuple[str, str]], extra: frozenset[str] = frozenset()) -> dict:
    """The browser's headers an upstream may see: the allow-list plus `extra` (lower-case names
    from the upstream's configuration), minus anything named in `Connection`."""
    pairs = list(headers)
    allowed = (FORWARDED_REQUEST_HEADERS | extra) - _connection_listed(pairs)
    return {name: value for name, value in pairs if name.lower() in allowed and not never_forwarded(name)}


def foreign_cookies(raw_cookie_header: str, own_cookies: tuple[str, str]) -> str:
    """The SPA's own cookies as the browser sent them, minus the BFF's session and login cookies.

    Works on the raw header, split at every `;` as browsers write it: re-serialising parsed
    cookies would turn `q="a; admin=1"` into two cookies upstream, and a BFF cookie hidden inside
    quotes is still dropped. `own_cookies`: the session cookie's name and the sign-in attempt
    cookies' prefix."""
    session_cookie, attempt_prefix = own_cookies
    kept = []
    for piece in raw_cookie_header.split(";"):
        name = piece.split("=", 1)[0].strip()
        if not name or name == session_cookie or name.startswith((session_cookie + "-", attempt_prefix)):
            continue
        kept.append(piece.strip())
    return "; ".join(kept)


# -- Responses --------------------------------------------------------------------------------

RELAYED_RESPONSE_HEADERS = frozenset(
    {
        "accept-ranges", "age", "cache-control", "content-disposition", "content-encoding",
        "content-language", "content-length", "content-range", "content-type", "etag", "expires",
        "last-modified", "location", "retry-after", "vary", "x-total-count", "ratelimit",
        "ratelimit-policy", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset",
        "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
    }
)  # fmt: skip
# Never relayed, even when an upstream's configuration lists them: they act on the SPA's whole
# origin, steer a proxy in front of the BFF, or let shared caches keep a per-user answer.
NEVER_RELAYED = HOP_BY_HOP | frozenset(
    {
        "set-cookie", "set-cookie2", "clear-site-data", "strict-transport-security", "alt-svc",
        "nel", "report-to", "reporting-endpoints", "content-security-policy",
        "content-security-policy-report-only", "x-frame-options", "refresh", "service-worker-allowed",
        "speculation-rules", "supports-loading-mode", "origin-agent-cluster", "x-sendfile",
        "x-lighttpd-send-file", "surrogate-control", "public-key-pins", "public-key-pins-report-only",
        "x-content-type-options", "referrer-policy", "x-request-id",
    }
)  # fmt: skip
NEVER_RELAYED_PREFIXES = ("access-control-", "x-accel-", "cross-origin-")
NEVER_RELAYED_SUFFIXES = ("cdn-cache-control",)


def never_relayed(name: str) -> bool:
    lower = name.lower()
    return lower in NEVER_RELAYED or lower.startswith(NEVER_RELAYED_PREFIXES) or lower.endswith(NEVER_RELAYED_SUFFIXES)


def relayed_response_headers(
    headers: Iterable[tuple[str, str]], extra: frozenset[str] = frozenset(), status: int = 200
) -> list[tuple[str, str]]:
    """The upstream's headers the browser may see: the allow-list plus `extra`. `Cache-Control`
    (all of its lines as one) always says `private`, or `no-store` when the upstream sent none;
    a 304 gets none added (its headers update the stored answer, which already has them).
    `Location` is left for `mapped_location`."""
    pairs = list(headers)
    allowed = (RELAYED_RESPONSE_HEADERS | extra) - _connection_listed(pairs) - {"cache-control", "location"}
    kept = [(name, value) for name, value in pairs if name.lower() in allowed and not never_relayed(name)]
    cache_control = ", ".join(value for name, value in pairs if name.lower() == "cache-control")
    if cache_control or status != 304:
        kept.append(("Cache-Control", private_cache_control(cache_control)))
    return kept


def private_cache_control(value: str) -> str:
    """The answer is per user: shared caches may never keep it (`public` and `s-maxage` go,
    `private` is added unless `no-store` already forbids storing it)."""
    directives = [d.strip() for d in value.split(",") if d.strip()]
    if not directives:
        return "no-store"
    # `private="X-Secret"` makes one field private and the rest shareable (RFC 9111 §5.2.2.7).
    kept = [d for d in directives if d.split("=", 1)[0].strip().lower() not in ("public", "s-maxage", "private")]
    names = {d.split("=", 1)[0].strip().lower() for d in kept}
    return ", ".join(kept if "no-store" in names else ["private", *kept])


def mapped_location(location: str, request_url: str, base: str, prefix: str) -> str | None:
    """An upstream's redirect as the browser may follow it: only to somewhere under the same
    upstream's base, rewritten to its `/api/<name>` path (as nginx's `proxy_redirect` does).
    A redirect elsewhere (another origin, another upstream's path, a path the browser would
    resolve out of `/api/<name>/`, such as `%2e%2e` segments) is not relayed."""
    target = urljoin(request_url, location.strip()).split("#", 1)[0]
    if not under_base(target, base):
        return None
    path_and_query = target.split("://", 1)[1].partition("/")[2]
    base_path = base.split("://", 1)[1].partition("/")[2].rstrip("/")
    rest = path_and_query[len(base_path) :] if base_path else "/" + path_and_query
    path, _, query = rest.partition("?")
    try:
        tail = api_tail(prefix + path, prefix + "/")
    except BffError:
        return None
    return f"{prefix}/{tail}" + (f"?{query}" if query else "")


def _connection_listed(pairs: list[tuple[str, str]]) -> set[str]:
    return {
        token.strip().lower() for name, value in pairs if name.lower() == "connection" for token in value.split(",")
    }
