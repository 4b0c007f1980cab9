"""Flask-Session's server-side session interface, storing through `SessionStore`.

Extended only through its documented hooks (`session_class`, `_retrieve_session_data`,
`_upsert_session`, `_delete_session`, `_get_store_id`), plus a `save_session` that deletes the
cookie with the attributes it was set with: Flask-Session omits Secure and SameSite there, and
browsers ignore such a deletion of a `__Host-` cookie.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any, cast

from flask import Flask, Request, Response, session
from flask_session.base import ServerSideSession, ServerSideSessionInterface

from .keyspace import SessionRef
from .sessions import SessionFilter, SessionStore


@functools.lru_cache(maxsize=256)
def session_ref(session_id: str) -> SessionRef | None:
    """`SessionRef.from_session_id`, remembered for the last few hundred ids: the interface reads
    the record with it, then the view and the access line ask again, a SHA-256 each (~25 µs a
    request under load). It maps an id to where its record would be and grants nothing; ids
    ended long ago simply fall out."""
    return SessionRef.from_session_id(session_id)


class BffSession(ServerSideSession):
    """The browser's session as views see it: the record's fields, where it lives, and whether a
    view has already ended it (so saving the emptied session deletes nothing a second time)."""

    ended: bool = False

    @property
    def ref(self) -> SessionRef | None:
        """None for anything but an id drawn at sign-in (a fresh, anonymous or forged cookie)."""
        return session_ref(self.sid or "")

    @property
    def signed_in(self) -> bool:
        return bool(self.get("sub")) and self.ref is not None


def current_session() -> BffSession:
    """The request's session object itself, typed as what this interface puts there: not the
    `flask.session` proxy, which would look the request context up again on every access."""
    return cast(BffSession, session._get_current_object())  # type: ignore[attr-defined]


OPENED_SESSION = "bff.session"  # the WSGI environ key of the session this request opened


class BffSessionInterface(ServerSideSessionInterface):
    """A Flask-Session backend storing through `SessionStore`.

    It derives from the backend-neutral base, not from `RedisSessionInterface`: that one replaces
    any client that is not a `redis.Redis` (a `RedisCluster`, say) with a localhost client,
    warning only. Our hooks never use a client of the base's anyway."""

    session_class = BffSession
    ttl = True

    def __init__(self, app: Flask, store: SessionStore) -> None:
        super().__init__(app, key_prefix="", sid_length=32)
        self.store = store

    def open_session(self, app: Flask, request: Request) -> ServerSideSession:
        """Flask-Session's, remembered in the environ for the access line: reading `flask.session`
        there would assert when opening failed, and would mark every session accessed."""
        session = super().open_session(app, request)
        request.environ[OPENED_SESSION] = session
        return session

    def _get_store_id(self, sid: str) -> str:
        return sid  # the store derives the key; the cookie value itself is never a key

    def _retrieve_session_data(self, store_id: str) -> dict[str, Any] | None:
        ref = session_ref(store_id)
        return self.store.read(ref) if ref else None  # a malformed cookie costs no round trip

    def _upsert_session(self, session_lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
        ref = session_ref(store_id)
        if ref is None:
            raise ValueError("only sessions started by sign-in are stored")
        self.store.write(ref, dict(session))

    def _delete_session(self, store_id: str) -> None:
        ref = session_ref(store_id)
        if ref:
            self.store.remove(SessionFilter(session=ref))

    def save_session(self, app: Flask, session: ServerSideSession | None, response: Response) -> None:
        if session is None:
            return  # opening it failed (Redis down); the error response is already chosen
        if not session.modified:
            # Read-only (the common case): nothing to store, no cookie to set (GETEX already slid
            # the idle expiry). Only `Vary: Cookie`, without Flask-Session's per-request work.
            if session.accessed:
                vary = response.headers.get("Vary")
                if not vary:
                    response.headers["Vary"] = "Cookie"
                elif "cookie" not in vary.lower():
                    response.headers["Vary"] = f"{vary}, Cookie"
            return
        if not session:
            if not cast(BffSession, session).ended:  # not already ended through end_sessions
                self._delete_session(session.sid)
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


def init_app(app: Flask, store: SessionStore) -> None:
    """Install the interface; the store is built once, in create_app."""
    app.session_interface = BffSessionInterface(app, store)
