"""The Redis client, from BFF_REDIS_URL: one server, a Sentinel set or a Cluster.

The only list of URL schemes and the only parser: `config.py` keeps the parsed target, and
`make_redis` builds the client from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url as redis_parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")
RedisClient = redis.Redis | RedisCluster


@dataclass(frozen=True)
class RedisTarget:
    """Where the sessions live, from BFF_REDIS_URL: one server, a Sentinel set, or a Cluster."""

    kind: str  # "single" | "sentinel" | "cluster"
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """`redis[s]://…` and `unix://…` as redis-py reads them;
    `redis[s]+sentinel://[user:pass@]host:port[,host:port…]/<master name>[/<db>]`;
    `redis[s]+cluster://[user:pass@]host:port[,host:port…]` (startup nodes).
    Raises ValueError with a reason that never repeats the URL (it may hold a password)."""
    scheme, _, rest = url.partition("://")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}")
    base, _, topology = scheme.partition("+")
    if not topology:
        _check_single(url)
        return RedisTarget("single", url)
    if base not in ("redis", "rediss") or topology not in ("sentinel", "cluster"):
        raise ValueError(f"unknown scheme {scheme!r}")
    credentials, _, location = rest.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    hosts, _, path = location.partition("/")
    nodes = tuple(_host_port(item, 26379 if topology == "sentinel" else 6379) for item in hosts.split(",") if item)
    if not nodes:
        raise ValueError("no host given")
    parts = [p for p in path.split("/") if p]
    if topology == "sentinel" and not parts:
        raise ValueError("a sentinel URL names the master: redis+sentinel://host:26379/mymaster")
    return RedisTarget(
        topology,
        url,
        nodes,
        master=parts[0] if parts and topology == "sentinel" else "",
        db=int(parts[1]) if topology == "sentinel" and len(parts) > 1 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=base == "rediss",
    )


def _check_single(url: str) -> None:
    """redis-py's own reading, plus what it lets through: a database that is not a number."""
    redis_parse_url(url)  # raises ValueError for a port or database that is not a number
    parts = urlsplit(url)
    if parts.scheme == "unix" and not parts.path:
        raise ValueError("must name the socket, as in unix:///run/redis/redis.sock")
    if parts.scheme in ("redis", "rediss") and not (parts.hostname and re.fullmatch(r"/?|/\d+", parts.path)):
        raise ValueError("must name a host and a database number, as in redis://host:6379/0")


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    host, _, port = item.rpartition(":") if ":" in item else (item, "", str(default_port))
    return host.strip("[]"), int(port)


def make_redis(target: RedisTarget, timeout: float) -> RedisClient:
    """A client with bounded timeouts and one quick retry, so a Redis outage answers in about
    2 × timeout instead of hanging workers; redis-py reconnects by itself when Redis is back."""
    bounded: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
    }
    if target.kind == "single":
        return redis.Redis.from_url(target.url, health_check_interval=30, **bounded)
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "sentinel":
        sentinel = Sentinel(
            list(target.nodes), sentinel_kwargs={"socket_timeout": timeout}, ssl=target.tls, **bounded, **credentials
        )
        return sentinel.master_for(target.master, db=target.db, **bounded, **credentials)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        ssl=target.tls,
        **bounded,
        **credentials,
    )
