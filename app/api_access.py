"""Who may call which API, and with which token: the rules every `/api/<name>/` call passes,
whoever forwards it (the Python proxy, or nginx after `GET /bff/authz`).

An upstream's policy (DESIGN §10, `BFF_API_UPSTREAMS`) decides the token: `user` (the signed-in
user's; nobody signed in is a 401), `user_or_none` (the user's when someone is signed in, else
none), `client` (the BFF's own client-credentials token, whoever calls) or `none`.
"""

from __future__ import annotations

from . import extensions
from .errors import BffError
from .proxy_paths import api_tail, upstream_url
from .refresh import UserToken, access_token_for
from .session_interface import current_session
from .upstreams import Upstream


def checked_target(name: str, path: str, prefix: str, query: str) -> tuple[Upstream, str]:
    """The checks before any token is looked at: `name` is configured and its policy lets this
    caller in, and the raw `path` under `prefix` stays under the upstream's base. Anonymous
    callers learn no name of an upstream that needs a user: it answers them as an unknown one
    does, 401. Returns the upstream and its URL."""
    session = current_session()
    signed_in = session.signed_in and session.ref is not None
    upstream = extensions.settings().api_upstreams.get(name)
    if upstream is None or (upstream.policy == "user" and not signed_in):
        if not signed_in:
            raise BffError(401, "unauthenticated", "No one is signed in.")
        raise BffError(404, "unknown_upstream", f"No API is configured under /api/{name}.")
    tail = api_tail(path, prefix + "/")
    return upstream, upstream_url(upstream.url, tail, query)


def user_token(upstream: Upstream, sign_in_resource: str | None) -> UserToken:
    """The sign-in's own token when the upstream asks for nothing else (no scope, and no resource
    or the sign-in's); otherwise one of its own, for exactly its resource and scope."""
    if upstream.scope is None and upstream.resource in (None, sign_in_resource):
        return UserToken()
    return UserToken(upstream.resource, upstream.scope)


def api_token(name: str, upstream: Upstream) -> str | None:
    """The access token `upstream` receives (None: no Authorization header), refreshed or
    fetched first when due."""
    if upstream.policy == "none":
        return None
    if upstream.policy == "client":
        return extensions.client_tokens().token(name, upstream)
    session = current_session()
    if not session.signed_in or session.ref is None:
        return None  # user_or_none (a `user` upstream refused the anonymous caller already)
    settings = extensions.settings()
    return access_token_for(
        extensions.store(),
        extensions.provider(),
        session.ref,
        dict(session),
        skew=settings.refresh_skew,
        which=user_token(upstream, settings.resource),
    )
