"""Which upstream URL an `/api/<name>/...` request may reach: pure rules, no Flask, no network.

The upstream URL is built from the raw, still-encoded request target, never from the decoded
path: Werkzeug decodes `%2f` into `/`, and urllib3 then removes `..` segments, so a decoded path
can climb out of the upstream's base path with the user's token. A segment is refused when any
server on the way could read it as `.` or `..`: raw or percent-encoded in any case, encoded
twice (`%252e`), with path parameters (`..;x`, as Tomcat and Spring strip them), in overlong
UTF-8 (`%c0%ae`), as Unicode compatibility dots (full-width `．`) or with trailing dots and
spaces (as IIS trims them).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from urllib.parse import quote, unquote_to_bytes

from urllib3.util import Url, parse_url

from .errors import BffError

_FORBIDDEN_ESCAPE = re.compile(r"%(?:2f|5c|3f|23|00)", re.IGNORECASE)
_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))
_DECODING_ROUNDS = 4  # `%25252e` and deeper: refused as undecidable


def invalid_path(why: str) -> BffError:
    return BffError(400, "invalid_path", f"The API path is not allowed: {why}.")


def raw_path(environ: dict) -> str:
    """The request target's path exactly as the client sent it, still percent-encoded.

    gunicorn passes it as RAW_URI, Werkzeug's server as REQUEST_URI; an absolute-form target
    (`GET http://host/path`) is reduced to its path, an origin-form one (starting with `/`) never
    is, whatever `://` it contains. Elsewhere (the test client) the decoded path is encoded
    again, which loses nothing these rules look for except encoded slashes."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:
        raw = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=~")
    path = raw.split("?", 1)[0]
    if not path.startswith("/") and "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    return path


def api_tail(path: str, prefix: str) -> str:
    """The part of a raw path after `prefix` (`/api/<name>/`), checked segment by segment and
    returned percent-encoded (raw bytes above ASCII are encoded byte for byte).

    Refused: dot segments in every spelling above, empty segments (`//`) other than a trailing
    slash, `/ \\ ? #` and NUL encoded (once or more), raw backslashes, `#`, controls and spaces,
    malformed escapes and invalid UTF-8."""
    if not path.startswith(prefix):
        raise invalid_path("the path must start with " + prefix)
    tail = path[len(prefix) :]
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F or ch in "\\#" for ch in tail):
        raise invalid_path("it contains a control character, a space, a backslash or '#'")
    # WSGI servers hand the raw target over as latin-1 text: one character per byte sent.
    tail = quote(tail, safe=_PRINTABLE_ASCII, encoding="latin-1")
    if _FORBIDDEN_ESCAPE.search(tail) or _BAD_ESCAPE.search(tail):
        raise invalid_path("it contains an encoded '/', '\\', '?', '#' or NUL, or a malformed escape")
    segments = tail.split("/")
    if any(segment == "" for segment in segments[:-1]):
        raise invalid_path("empty segments ('//') are refused")
    for segment in segments:
        _check_segment(segment)
    return tail


def _check_segment(segment: str) -> None:
    # Folded first (full-width `／` is `/` to an NFKC or "best-fit" upstream), then checked.
    name = unicodedata.normalize("NFKC", _fully_decoded(segment.split(";", 1)[0])).split(";", 1)[0]
    if any(ch in name for ch in "/\\?#\x00"):
        raise invalid_path("it contains an encoded '/', '\\', '?', '#' or NUL, in any spelling")
    core = name.strip()
    if core and set(core) == {"."}:
        raise invalid_path("'.' and '..' segments are refused, however they are spelled")


def _fully_decoded(text: str) -> str:
    """Percent-decoded until nothing changes, as a server that decodes more than once would."""
    for _ in range(_DECODING_ROUNDS):
        try:
            decoded = unquote_to_bytes(text).decode("utf-8")  # strict: overlong forms are invalid
        except UnicodeDecodeError:
            raise invalid_path("it contains invalid or overlong UTF-8") from None
        if decoded == text:
            return decoded
        text = decoded
    raise invalid_path("it is percent-encoded too many times over")


def upstream_url(base: str, tail: str, query: str) -> str:
    """`base/tail?query`, checked after building it: it must stay under the base URL."""
    url = f"{base}/{tail}" + (f"?{query}" if query else "")
    if not under_base(url, base):
        raise invalid_path("it leaves the API's base URL")
    return url


@functools.lru_cache(maxsize=64)
def _parsed_base(base: str) -> Url:
    """An upstream's base URL as urllib3 reads it: parsed once per base (they are configuration)."""
    return parse_url(base + "/")


def under_base(url: str, base: str) -> bool:
    """Same scheme, host and port as `base`, and a path under its path (urllib3's reading)."""
    built, expected = parse_url(url), _parsed_base(base)
    same_origin = (built.scheme, built.host, built.port) == (expected.scheme, expected.host, expected.port)
    return same_origin and (built.path or "/").startswith(expected.path or "/")
