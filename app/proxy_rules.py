"""What the API proxy may send upstream and relay back: pure rules, no Flask, no network.

Paths: the upstream URL is built from the raw, still-encoded request target, never from the
decoded path (Werkzeug decodes `%2f` into `/`, and urllib3 then removes `..` segments), and any
segment or escape that could climb out of the upstream's base path is refused.

Headers: an allow-list both ways. Requests carry only end-to-end content and negotiation
headers (plus those an upstream's configuration lists); the BFF sets `X-Forwarded-*` itself.
Responses never carry headers that would act on the SPA's origin as a whole (cookies, HSTS,
Clear-Site-Data, CORS) and are never cacheable by shared caches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from urllib3.util import parse_url

from .errors import BffError

# -- Paths --------------------------------------------------------------------------------------

_DOT_SEGMENT = re.compile(r"^(?:\.|%2e){1,2}$", re.IGNORECASE)
_FORBIDDEN_ESCAPE = re.compile(r"%(?:2f|5c|3f|23|00)", re.IGNORECASE)
_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


def invalid_path(why: str) -> BffError:
    return BffError(400, "invalid_path", f"The API path is not allowed: {why}.")


def raw_path(environ: dict) -> str:
    """The request target's path exactly as the client sent it, still percent-encoded.

    gunicorn passes it as RAW_URI, Werkzeug's server as REQUEST_URI; an absolute-form target
    (`GET http://host/path`) is reduced to its path. Elsewhere (the test client) the decoded path
    is encoded again, which loses nothing these rules look for except encoded slashes."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:
        raw = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=~")
    if "://" in raw.split("?", 1)[0]:
        raw = "/" + raw.split("://", 1)[1].partition("/")[2]
    return raw.split("?", 1)[0]


def api_tail(path: str, prefix: str) -> str:
    """The part of a raw path after `prefix` (`/api/<name>/`), checked segment by segment.

    Refused: `.` and `..` segments raw or encoded in any case, empty segments (`//`) other than
    a trailing slash, encoded `/ \\ ? #` and NUL, raw backslashes, `#`, controls and spaces,
    and malformed escapes. Raw bytes above ASCII are percent-encoded, byte for byte."""
    if not path.startswith(prefix):
        raise invalid_path("the path must start with " + prefix)
    tail = path[len(prefix) :]
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F or ch in "\\#" for ch in tail):
        raise invalid_path("it contains a control character, a space, a backslash or '#'")
    if _FORBIDDEN_ESCAPE.search(tail) or _BAD_ESCAPE.search(tail):
        raise invalid_path("it contains an encoded '/', '\\', '?', '#' or NUL, or a malformed escape")
    segments = tail.split("/")
    if any(_DOT_SEGMENT.match(segment) for segment in segments):
        raise invalid_path("'.' and '..' segments are refused")
    if any(segment == "" for segment in segments[:-1]):
        raise invalid_path("empty segments ('//') are refused")
    # WSGI servers hand the raw target over as latin-1 text: one character per byte sent.
    return quote(tail, safe=_PRINTABLE_ASCII, encoding="latin-1")


def upstream_url(base: str, tail: str, query: str) -> str:
    """`base/tail?query`, checked after building it: it must stay under the base URL."""
    url = f"{base}/{tail}" + (f"?{query}" if query else "")
    built, expected = parse_url(url), parse_url(base + "/")
    same_origin = (built.scheme, built.host, built.port) == (expected.scheme, expected.host, expected.port)
    if not same_origin or not (built.path or "").startswith(expected.path or "/"):
        raise invalid_path("it leaves the API's base URL")
    return url


# -- Request headers ----------------------------------------------------------------------------

FORWARDED_REQUEST_HEADERS = frozenset(
    {
        "accept", "accept-charset", "accept-encoding", "accept-language", "cache-control",
        "content-encoding", "content-language", "content-type", "if-match", "if-modified-since",
        "if-none-match", "if-range", "if-unmodified-since", "pragma", "range", "user-agent",
    }
)  # fmt: skip
# Never forwarded, even when an upstream's configuration lists them: they would let the browser
# speak for the proxy (client address, original URL, method override, identity) or reach hop by hop.
NEVER_FORWARDED = frozenset(
    {
        "authorization", "connection", "content-length", "cookie", "forwarded", "host", "keep-alive",
        "te", "trailer", "transfer-encoding", "upgrade", "x-csrf", "x-real-ip", "x-original-url",
        "x-original-uri", "x-rewrite-url", "x-http-method-override", "x-http-method", "x-method-override",
        "x-remote-user", "x-remote-addr", "x-client-ip", "x-bff-authz-secret", "x-request-id",
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
    listed = {
        token.strip().lower() for name, value in pairs if name.lower() == "connection" for token in value.split(",")
    }
    allowed = (FORWARDED_REQUEST_HEADERS | extra) - listed
    return {name: value for name, value in pairs if name.lower() in allowed and not never_forwarded(name)}


def foreign_cookies(raw_cookie_header: str, own_cookie: str) -> str:
    """The SPA's own cookies as the browser sent them, minus the BFF's session and login cookies.

    Works on the raw header, split at every `;` as browsers write it: re-serialising parsed
    cookies would turn `q="a; admin=1"` into two cookies upstream, and a BFF cookie hidden inside
    quotes is still dropped."""
    kept = []
    for piece in raw_cookie_header.split(";"):
        name = piece.split("=", 1)[0].strip()
        if not name or name == own_cookie or name.startswith(own_cookie + "-"):
            continue
        kept.append(piece.strip())
    return "; ".join(kept)


# -- Response headers ---------------------------------------------------------------------------

NOT_RELAYED = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-connection", "te", "trailer",
        "transfer-encoding", "upgrade", "set-cookie", "set-cookie2", "clear-site-data",
        "strict-transport-security", "alt-svc", "public-key-pins", "public-key-pins-report-only",
    }
)  # fmt: skip


def relayed_response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's headers the browser may see. The answer is per user: `Cache-Control:
    no-store` when the upstream sent none, and `public` always becomes `private`."""
    pairs = list(headers)
    listed = {
        token.strip().lower() for name, value in pairs if name.lower() == "connection" for token in value.split(",")
    }
    kept: list[tuple[str, str]] = []
    cache_control = False
    for name, value in pairs:
        lower = name.lower()
        if lower in NOT_RELAYED or lower in listed or lower.startswith("access-control-"):
            continue
        if lower == "cache-control":
            cache_control = True
            value = private_cache_control(value)
        kept.append((name, value))
    if not cache_control:
        kept.append(("Cache-Control", "no-store"))
    return kept


def private_cache_control(value: str) -> str:
    directives = [d.strip() for d in value.split(",") if d.strip()]
    kept = [d for d in directives if d.split("=", 1)[0].strip().lower() not in ("public", "s-maxage")]
    if len(kept) != len(directives) and not any(d.lower() == "private" for d in kept):
        kept.insert(0, "private")
    return ", ".join(kept) or "no-store"
