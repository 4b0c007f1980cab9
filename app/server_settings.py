"""gunicorn's settings, read from the environment by gunicorn.conf.py and validated like the
app's (one line naming the variable). Defaults are written once, on the dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gunicorn import glogging

from . import env
from .env import ConfigError

__all__ = ["AppAccessLinesLogger", "ConfigError", "ServerSettings", "load_server_settings"]

WORKER_CLASSES = ("gthread", "sync")  # the two gunicorn workers installed (no eventlet or gevent)


@dataclass(frozen=True)
class ServerSettings:
    """gunicorn's settings, as gunicorn.conf.py reads them from the environment."""

    bind: str = "127.0.0.1:8000"
    worker_class: str = "gthread"
    workers: int = 2
    threads: int = 8
    worker_timeout: int = 60
    graceful_timeout: int = 30
    keepalive: int = 5
    # gunicorn also reads FORWARDED_ALLOW_IPS itself, and checks it the same way, before
    # gunicorn.conf.py runs: its one-line message names the value rather than the variable.
    forwarded_allow_ips: str = "127.0.0.1"


def load_server_settings(environ: Mapping[str, str]) -> ServerSettings:
    """Build `ServerSettings` from environment variables, or raise `ConfigError` naming the culprit."""
    default = ServerSettings()
    return ServerSettings(
        bind=env.bind(environ, "BFF_BIND", default.bind),
        worker_class=env.choice(environ, "BFF_WORKER_CLASS", WORKER_CLASSES, default.worker_class),
        workers=env.number(environ, "BFF_WORKERS", default.workers, whole=True, maximum=256, unit="workers"),
        threads=env.number(environ, "BFF_THREADS", default.threads, whole=True, maximum=1024, unit="threads"),
        worker_timeout=env.number(environ, "BFF_WORKER_TIMEOUT", default.worker_timeout, whole=True),
        graceful_timeout=env.number(environ, "BFF_GRACEFUL_TIMEOUT", default.graceful_timeout, whole=True),
        keepalive=env.number(environ, "BFF_KEEPALIVE", default.keepalive, whole=True, zero_allowed=True),
        forwarded_allow_ips=env.addresses(environ, "FORWARDED_ALLOW_IPS", default.forwarded_allow_ips),
    )


class AppAccessLinesLogger(glogging.Logger):
    """gunicorn's logger, without gunicorn's access lines: the app writes one JSON line per request,
    without the query string (app/logs.py). gunicorn builds the atoms of its own line (a dict of
    every header and environ entry) whenever any logging config is given, even with the
    `gunicorn.access` logger silenced: about 100 µs of every request under load (README,
    "Benchmarks"). Its error log is untouched."""

    def access(self, resp: object, req: object, environ: object, request_time: object) -> None:
        return None
