"""Prometheus metrics that add up across gunicorn workers (prometheus-client multiprocess mode).

gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh folder before the app is imported;
without it (the Flask CLI, the test client) the metrics live in this process only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from redis.exceptions import RedisError

from .errors import BffError

LOGINS = Counter(
    "bff_logins_total", "Sign-ins completed at /bff/callback, by result (success or error code).", ["result"]
)
LOGOUTS = Counter("bff_logouts_total", "Sessions ended by POST /bff/logout.")
SIGNOUTS = Counter(
    "bff_signouts_total",
    "Logouts the IdP returned from, by what the BFF learnt (complete, idp_session_alive, unconfirmed).",
    ["outcome"],
)
LOGINS_WITHOUT_REFRESH_TOKEN = Counter(
    "bff_logins_without_refresh_token_total", "Sign-ins that asked for offline_access and got no refresh token."
)
BACKCHANNEL_LOGOUTS = Counter("bff_backchannel_logouts_total", "Back-channel logout requests, by result.", ["result"])
SESSIONS_ENDED_BY_IDP = Counter("bff_backchannel_sessions_ended_total", "Sessions ended by back-channel logout.")
CLIENT_TOKENS = Counter(
    "bff_client_tokens_total",
    "Client-credentials token requests to the IdP, by upstream and result (fetched, refused, idp_unavailable).",
    ["upstream", "result"],
)
REFRESHES = Counter(
    "bff_token_refreshes_total",
    "Access-token refreshes, by result (success, refused, idp_unavailable, session_ended).",
    ["result"],
)
PROXY_REQUESTS = Counter(
    "bff_proxy_requests_total", "Requests through /api, by upstream and status.", ["upstream", "status"]
)
AUTHZ_DECISIONS = Counter(
    "bff_authz_decisions_total", "GET /bff/authz answers to nginx, by upstream and status.", ["upstream", "status"]
)
REQUEST_DURATION = Histogram(
    "bff_request_duration_seconds",
    "Time to the response's headers, by route, method and status.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REDIS_ERRORS = Counter("bff_redis_errors_total", "Requests that failed because Redis did not answer.")


# Label values come from fixed sets, whatever a client or an IdP sends: a label per made-up error
# code or method would grow /metrics (and every worker's memory) without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RESULTS = frozenset(
    {
        "success", "access_denied", "account_selection_required", "consent_required", "idp_error",
        "idp_unavailable", "interaction_required", "invalid_grant", "invalid_id_token", "invalid_issuer",
        "invalid_metadata", "invalid_request", "invalid_scope", "invalid_state", "login_required",
        "server_error", "session_store_unavailable", "temporarily_unavailable", "token_request_failed",
        "unauthorized_client", "unsupported_response_type",
    }
)  # fmt: skip


_duration_children: dict[tuple[str, str, str], Histogram] = {}


def request_duration(labels: tuple[str, str, str]) -> Histogram:
    """REQUEST_DURATION's child for these labels, looked up once per process (the label set is
    fixed, so the cache is bounded): `.labels()` validates and locks on every call."""
    child = _duration_children.get(labels)
    if child is None:
        child = _duration_children[labels] = REQUEST_DURATION.labels(*labels)
    return child


def method_label(method: str) -> str:
    return method if method in METHODS else "OTHER"


def result_label(code: str) -> str:
    return code if code in RESULTS else "other"


def status_label(status: int) -> str:
    """HTTP statuses as label values: a fixed set, whatever an upstream answers."""
    return str(status) if 100 <= status <= 599 else "other"


@contextmanager
def failures(counter: Counter) -> Iterator[None]:
    """Count a step that fails, by the error code it failed with; its success is the caller's."""
    try:
        yield
    except BffError as error:
        counter.labels(result_label(error.code)).inc()
        raise


@contextmanager
def outcome(counter: Counter) -> Iterator[None]:
    """Count a step as `success`, or by the error code it failed with."""
    with failures(counter):
        yield
    counter.labels("success").inc()


class ActiveSessions:
    """`bff_sessions_active`, read at scrape time through `count` (the store's one ZCOUNT)."""

    def __init__(self, count: Callable[[], int]) -> None:
        self.count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            value = self.count()
        except RedisError:
            return  # the rest of the scrape still works while Redis is down
        yield GaugeMetricFamily(
            "bff_sessions_active",
            "Sessions not ended and not past their lifetime (those idle since their last request included).",
            value=value,
        )


class _ThisProcess:
    """This process's own metrics, when there are no other workers to add up."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def scrape(count_sessions: Callable[[], int]) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(ActiveSessions(count_sessions))
    return generate_latest(registry), CONTENT_TYPE_LATEST
