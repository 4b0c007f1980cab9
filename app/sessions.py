"""The session store: the only module that knows Redis key names.

Sessions go through Flask-Session's Redis interface, extended only through its hooks:
- the Redis key is a hash of the cookie value, so whoever can read Redis keys (an operator with
  `redis-cli --scan`) still cannot forge a cookie;
- reads use GETEX, which slides the idle expiry in the same round trip, and writes nothing else;
- an emptied session deletes its cookie with the attributes it was set with (Flask-Session
  omits Secure and SameSite, so browsers would ignore the deletion of a `__Host-` cookie).
Login attempts live in their own keys, one per `state`, so parallel sign-ins in several tabs
never overwrite each other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import timedelta
from typing import Any

import redis
from flask import Flask, Response
from flask_session.base import ServerSideSession
from flask_session.redis import RedisSessionInterface

SESSION_PREFIX = "bff:session:"
LOGIN_PREFIX = "bff:login:"
LOGIN_TTL = 600  # seconds a person has to finish signing in at the IdP
SESSION_ID_BYTES = 32  # 256 bits of entropy in the cookie value


def digest(value: str) -> str:
    """URL-safe SHA-256: what Redis keys hold instead of secrets."""
    raw = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def session_handle(session_id: str) -> str:
    """A short public name for a session, for logs and the CLI; it grants nothing."""
    return digest(session_id)[:16]


def make_redis(url: str) -> redis.Redis:
    """A client with bounded timeouts, so a Redis outage answers quickly instead of hanging workers."""
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)


def now() -> int:
    return int(time.time())


class BffSessionInterface(RedisSessionInterface):
    """Flask-Session's Redis backend with hashed keys, GETEX reads and lifetimes from the record."""

    def __init__(self, app: Flask, client: redis.Redis, idle_timeout: int) -> None:
        super().__init__(app, client=client, key_prefix=SESSION_PREFIX, sid_length=SESSION_ID_BYTES)
        self.idle_timeout = idle_timeout

    def _get_store_id(self, sid: str) -> str:
        return self.key_prefix + digest(sid)

    def _retrieve_session_data(self, store_id: str) -> dict[str, Any] | None:
        raw = self.client.getex(store_id, ex=self.idle_timeout)
        if not raw:
            return None
        data = self.serializer.decode(raw)
        if data.get("expires_at", float("inf")) <= now():
            return None  # past its absolute lifetime; the key's TTL removes it soon
        return data

    def _upsert_session(self, session_lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
        absolute_left = session.get("expires_at", now() + self.idle_timeout) - now()
        ttl = max(1, min(self.idle_timeout, absolute_left))
        self.client.set(store_id, self.serializer.encode(session), ex=ttl)

    def save_session(self, app: Flask, session: ServerSideSession | None, response: Response) -> None:
        if session is None:
            return  # opening it failed (Redis down); the error response is already chosen
        if session.modified and not session:
            self._delete_session(self._get_store_id(session.sid))
            response.delete_cookie(
                self.get_cookie_name(app),
                path=self.get_cookie_path(app),
                domain=self.get_cookie_domain(app),
                secure=self.get_cookie_secure(app),
                httponly=self.get_cookie_httponly(app),
                samesite=self.get_cookie_samesite(app),
            )
            response.vary.add("Cookie")
            return
        super().save_session(app, session, response)


class LoginAttempts:
    """Pending sign-ins keyed by their `state`, each readable once and only until it expires."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def _key(self, state: str) -> str:
        return LOGIN_PREFIX + digest(state)

    def put(self, state: str, attempt: dict[str, Any]) -> None:
        self.client.set(self._key(state), json.dumps(attempt), ex=LOGIN_TTL)

    def get(self, state: str) -> dict[str, Any] | None:
        raw = self.client.get(self._key(state))
        return json.loads(raw) if raw else None

    def consume(self, state: str) -> bool:
        """True for exactly one caller, even when the same callback arrives twice at once."""
        return self.client.delete(self._key(state)) == 1


def session_record(
    *,
    claims: dict[str, Any],
    tokens: dict[str, Any],
    max_lifetime: int,
    user_agent: str,
    client_ip: str,
) -> dict[str, Any]:
    """What one signed-in browser holds server-side. Tokens never leave this record."""
    created = now()
    return {
        "sub": claims["sub"],
        "sid": claims.get("sid"),
        "claims": claims,
        "tokens": {
            "access_token": tokens["access_token"],
            "refresh_token": tokens.get("refresh_token"),
            "id_token": tokens["id_token"],
            "expires_at": _token_expiry(tokens, created),
        },
        "created_at": created,
        "expires_at": created + max_lifetime,
        "user_agent": user_agent[:256],
        "client_ip": client_ip,
    }


def _token_expiry(tokens: dict[str, Any], issued_at: int) -> int | None:
    expires_in = tokens.get("expires_in")
    try:
        return issued_at + int(expires_in)
    except (TypeError, ValueError):
        return None


def init_app(app: Flask, redis_url: str, idle_timeout: int) -> None:
    client = make_redis(redis_url)
    app.session_interface = BffSessionInterface(app, client=client, idle_timeout=idle_timeout)
    app.extensions["bff.redis"] = client
    app.extensions["bff.login_attempts"] = LoginAttempts(client)
