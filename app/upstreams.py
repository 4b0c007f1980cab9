"""`BFF_API_UPSTREAMS`: the APIs behind `/api/<name>/`, each a base URL and, optionally, the
headers it receives and returns beyond the proxy's allow-lists."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .env import ConfigError
from .proxy_headers import never_forwarded, never_relayed

UPSTREAM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
UPSTREAM_KEYS = ("url", "forward_headers", "return_headers")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token


@dataclass(frozen=True)
class Upstream:
    """An API behind /api/<name>/: its base URL (no trailing slash), and the headers (lower-case
    names) it receives from the browser and returns to it beyond the proxy's allow-lists."""

    url: str
    forward_headers: frozenset[str] = frozenset()
    return_headers: frozenset[str] = frozenset()


def load_upstreams(environ: Mapping[str, str]) -> dict[str, Upstream]:
    """`{"name": "https://api.example.com/base"}`: /api/<name>/<path> goes to base + /<path>.
    A value may also be `{"url": "https://…", "forward_headers": ["X-Tenant"], "return_headers":
    ["X-Page-Count"]}`: headers beyond the allow-lists, sent up and relayed back."""
    raw = environ.get("BFF_API_UPSTREAMS", "").strip()
    if not raw:
        return {}
    try:
        upstreams = json.loads(raw)
    except ValueError:
        raise ConfigError('BFF_API_UPSTREAMS: must be a JSON object such as {"orders": "https://api/v1"}') from None
    if not isinstance(upstreams, dict):
        raise ConfigError('BFF_API_UPSTREAMS: must be a JSON object such as {"orders": "https://api/v1"}')
    return {name: _upstream(name, value) for name, value in upstreams.items()}


def _upstream(name: str, value: object) -> Upstream:
    if not UPSTREAM_NAME.fullmatch(name):
        raise ConfigError(f"BFF_API_UPSTREAMS: name {name!r} must be lowercase letters, digits, - or _")
    if not isinstance(value, dict):
        value = {"url": value}
    for key in value:
        if key not in UPSTREAM_KEYS:
            raise ConfigError(
                f"BFF_API_UPSTREAMS: {name!r} has unknown key {key!r} ({', '.join(UPSTREAM_KEYS)} are known)"
            )
    if "url" not in value:
        raise ConfigError(f"BFF_API_UPSTREAMS: {name!r} has no 'url'")
    base = value["url"]
    parts = urlsplit(base) if isinstance(base, str) else None
    if (
        not isinstance(base, str)
        or not parts
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
    ):
        raise ConfigError(f"BFF_API_UPSTREAMS: {name!r} must map to an absolute http(s) URL without query")
    forward = _header_names(name, value, "forward_headers", never_forwarded, "forwarded")
    relay = _header_names(name, value, "return_headers", never_relayed, "relayed")
    return Upstream(base.rstrip("/"), forward, relay)


def _header_names(name: str, value: dict, key: str, refused: Callable[[str], bool], verb: str) -> frozenset[str]:
    headers = value.get(key, [])
    if not isinstance(headers, list) or not all(isinstance(header, str) for header in headers):
        raise ConfigError(f"BFF_API_UPSTREAMS: {name!r}: {key} must be a list of header names")
    for header in headers:
        if not HEADER_NAME.fullmatch(header):
            raise ConfigError(f"BFF_API_UPSTREAMS: {name!r}: {header!r} is not a valid header name")
        if refused(header):
            raise ConfigError(f"BFF_API_UPSTREAMS: {name!r}: header {header!r} is never {verb}")
    return frozenset(header.lower() for header in headers)
