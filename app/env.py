"""Reading one environment variable each, validated: the one place `ConfigError`s come from.

Every problem names its variable first, so an operator sees one line that says what to fix
instead of a traceback from deep inside a request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

# gunicorn's bind forms: host:port, [v6 address]:port, unix:<path>, fd://<number>
BIND = re.compile(r"^(?:unix:.+|fd://\d+|(?:tcp://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d{1,5}))$")


class ConfigError(ValueError):
    """A missing or invalid setting; the message names the variable."""


def required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name}: required but not set")
    return value


def url(environ: Mapping[str, str], name: str, path_allowed: bool = True) -> str:
    value = required(environ, name)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: must be an absolute http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}: must not carry a query or fragment")
    if not path_allowed and parts.path not in ("", "/"):
        raise ConfigError(f"{name}: must be an origin without a path, such as https://app.example.com")
    return value


def number(
    environ: Mapping[str, str],
    name: str,
    default: float,
    whole: bool,
    maximum: float | None = None,
    unit: str = "seconds",
    zero_allowed: bool = False,
) -> Any:
    """A positive number (of seconds unless `unit` says otherwise): whole for lifetimes and
    counts, fractional (and capped) for timeouts."""
    raw = environ.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = f"a whole number of {unit}" if whole else f"a number of {unit}"
        raise ConfigError(f"{name}: must be {kind}, got {raw!r}") from None
    if value < 0 or (value == 0 and not zero_allowed) or (maximum is not None and value > maximum):
        least = "0 or more" if zero_allowed else "positive"
        limit = f" and at most {maximum:g}" if maximum is not None else ""
        raise ConfigError(f"{name}: must be {least}{limit}, got {raw}")
    return value


def count(environ: Mapping[str, str], name: str) -> int:
    raw = environ.get(name, "").strip() or "0"
    if not raw.isdigit() or int(raw) > 10:
        raise ConfigError(f"{name}: must be a whole number from 0 to 10, got {raw!r}")
    return int(raw)


def flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: must be true or false, got {raw!r}")


def choice(
    environ: Mapping[str, str],
    name: str,
    choices: tuple[str, ...],
    default: str,
    normalise: Callable[[str], str] = str,
) -> str:
    value = normalise(environ.get(name, "").strip()) or default
    if value not in choices:
        raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def bind(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip() or default
    match = BIND.match(value)
    if not match or not 0 < int(match["port"] or 1) < 65536:
        raise ConfigError(f"{name}: must be host:port, [v6 address]:port, unix:/path or fd://<number>, got {value!r}")
    return value


def addresses(environ: Mapping[str, str], name: str, default: str) -> str:
    """`*`, or comma-separated IP addresses and networks (gunicorn's forwarded_allow_ips)."""
    value = environ.get(name, "").strip() or default
    if value == "*":
        return value
    entries = [entry.strip() for entry in value.split(",")]
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: must be * or comma-separated IP addresses or networks, got {entry!r}") from None
    return ",".join(entries)
