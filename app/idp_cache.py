"""The last good copy of one IdP document (discovery metadata, JWKS), for riding out IdP outages.

Every sign-in and token check needs these documents, so while the IdP is down or slow, requests
must neither each pay a network timeout nor queue behind one another's. Hence:
- stale on error: a failed refetch keeps serving the last good copy;
- backoff: after a failure nothing is sent for 1 s, then 2, 4 ... up to 60 s (reset by a
  success); meanwhile callers get the copy, or `IdpUnavailable` at once when there is none;
- single flight, and no lock across the network: one thread fetches; the others take the copy,
  or, having none, wait (bounded) for that fetch's outcome instead of starting their own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import BffError, IdpUnavailable, OidcError

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
SLOT_WAIT = 0.25  # a CallGate caller waits this long for a slot: a burst queues, a hanging IdP does not hold threads


class Backoff:
    """Failures in a row and the time before which nothing is sent: 1 s after the first, doubling
    to 60 s, reset by a success. Not locked itself: its owner's lock guards it."""

    def __init__(self, initial: float, maximum: float, clock: Callable[[], float]) -> None:
        self._initial = initial
        self._maximum = maximum
        self._clock = clock
        self._failures = 0
        self.retry_at = -math.inf

    def waiting(self) -> bool:
        return self._clock() < self.retry_at

    def failed(self) -> float:
        """Count a failure; returns the delay it imposes."""
        self._failures += 1
        delay = min(self._maximum, self._initial * 2 ** (self._failures - 1))
        self.retry_at = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        self._failures, self.retry_at = 0, -math.inf


class CachedDocument(Generic[T]):
    """One document, fetched by `fetch` (which raises on failure) and cached until `get` wants a
    younger one. `wait` bounds how long a caller without a copy waits for another's fetch."""

    def __init__(
        self,
        what: str,
        fetch: Callable[[], T],
        *,
        wait: float,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self._fetch = fetch
        self._wait = wait
        self._clock = clock
        self._lock = threading.Lock()  # guards the fields below, and is never held while fetching
        self._value: T | None = None
        self._fetched_at = -math.inf
        self._backoff = Backoff(backoff_initial, backoff_max, clock)  # no fetch before its retry_at
        self._error: OidcError | None = None  # the last failure, for the callers that waited on it
        self._in_flight: threading.Event | None = None  # set when the current fetch is over

    def get(self, max_age: float = math.inf) -> T:
        """The copy if younger than `max_age` seconds, else a new one; the copy if that fails."""
        with self._lock:
            now = self._clock()
            flight = self._in_flight
            if self._value is not None and (
                now - self._fetched_at < max_age or flight is not None or now < self._backoff.retry_at
            ):
                return self._value  # fresh enough, or another thread is fetching, or backing off
            if flight is None and now < self._backoff.retry_at:
                wait = math.ceil(self._backoff.retry_at - now)
                raise IdpUnavailable(f"the IdP's {self.what} could not be fetched; next attempt in {wait} s")
            mine = flight is None
            if flight is None:
                flight = self._in_flight = threading.Event()
        return self._fetch_for_all(flight) if mine else self._await(flight)

    def _await(self, flight: threading.Event) -> T:
        """Wait for the fetch under way, having no copy: its document, or its error."""
        if not flight.wait(self._wait):
            raise IdpUnavailable(f"the IdP's {self.what} is still being fetched")
        with self._lock:
            value, error = self._value, self._error
        if value is not None:
            return value
        raise error or IdpUnavailable(f"the IdP's {self.what} could not be fetched")

    def _fetch_for_all(self, flight: threading.Event) -> T:
        """Fetch outside the lock, record the outcome, then wake whoever waits for it."""
        try:
            value = self._fetch()
        except Exception as error:
            stale = self._failed(error)
            if stale is None:
                raise
            return stale
        else:
            with self._lock:
                self._value, self._fetched_at = value, self._clock()
                self._error = None
                self._backoff.succeeded()
            return value
        finally:
            with self._lock:
                self._in_flight = None
            flight.set()

    def _failed(self, error: Exception) -> T | None:
        """Back off, remember the error for waiters, log it; returns the copy to serve, if any."""
        with self._lock:
            delay = self._backoff.failed()
            self._error = error if isinstance(error, OidcError) else None
            stale = self._value
        log.warning(
            "IdP %s fetch failed (%s); %s; next attempt in %.1f s",
            self.what,
            _reason(error),
            "serving the last good copy" if stale is not None else "no copy to serve",
            delay,
        )
        return stale


def _reason(error: BaseException) -> str:
    """What went wrong, by kind only: requests' messages carry the URL, query string and all."""
    text = error.description if isinstance(error, OidcError) else type(error).__name__
    cause = error.__cause__ or error.__context__
    return f"{text}: {type(cause).__name__}" if cause is not None else text


class CallGate:
    """Calls to one IdP endpoint that anonymous requests cause (a pushed authorization request
    per `/bff/login`): at most `limit` in flight per process, so that an IdP that hangs holds
    few of gunicorn's threads (the rest answer 503 `idp_busy` at once), and after a failure
    none for a backoff (1 s, doubling to 60 s, reset by a success), so that an IdP that fails
    or says 429 is not asked again by every sign-in start. A refusal of one request (a 4xx: a
    `prompt` the IdP does not support) is that browser's answer only: counting it would let one
    anonymous request deny sign-ins to everyone. A caller waits SLOT_WAIT for a slot,
    so that a burst of healthy sign-ins queues briefly rather than failing."""

    def __init__(
        self,
        what: str,
        limit: int,
        *,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._backoff = Backoff(backoff_initial, backoff_max, clock)

    def call(self, send: Callable[[], T]) -> T:
        with self._lock:
            if self._backoff.waiting():
                raise IdpUnavailable(f"the IdP's {self.what} failed a moment ago")
        if not self._slots.acquire(timeout=SLOT_WAIT):
            raise BffError(503, "idp_busy", "Too many sign-ins are starting at once; try again in a moment.")
        try:
            result = send()
        except IdpUnavailable:  # no answer, a 5xx, a 429: the IdP's trouble, not this request's
            with self._lock:
                delay = self._backoff.failed()
            log.warning("the IdP's %s failed; not asked again for %.0f s", self.what, delay)
            raise
        finally:
            self._slots.release()
        with self._lock:
            self._backoff.succeeded()
        return result
