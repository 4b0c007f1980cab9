"""The BFF's own access tokens (OAuth client credentials, RFC 6749 §4.4) for upstreams whose
policy is `client` (DESIGN §10): one per upstream, resource and scope, cached in Redis (sealed)
for a little less than its lifetime and fetched under a Redis lock, so that however many workers
and hosts ask at once, the IdP sees one token request.

The only code that touches the client-token keys (their names are keyspace.py's).
"""

from __future__ import annotations

import json
import logging
import secrets
import time

from . import metrics
from .crypto import TokenCipher, UnreadableTokens
from .errors import BffError, TokenRefused
from .idp_requests import token_lifetime
from .keyspace import client_token_keys
from .oidc import Provider
from .redis_client import RedisClient
from .sessions import RELEASE_IF_OWNER
from .upstreams import Upstream

log = logging.getLogger(__name__)

FIRST_POLL_SECONDS = 0.02  # a waiter's first look at Redis; each next one waits twice as long, up to:
MAX_POLL_SECONDS = 0.5
NO_LIFETIME_TTL = 60  # a token response without a believable `expires_in`: reused for this long
MAX_CACHE_SECONDS = 3600  # however long the token lasts, one the IdP revoked is dropped within the hour
FAILURE_TTL_MS = 2000  # after the IdP refused or failed, callers hear so for this long, without asking it again


class ClientTokens:
    def __init__(self, client: RedisClient, cipher: TokenCipher, provider: Provider, skew: int) -> None:
        self.client = client
        self.cipher = cipher
        self.provider = provider
        self.skew = skew
        self._release = client.register_script(RELEASE_IF_OWNER)

    def token(self, name: str, upstream: Upstream) -> str:
        """The cached token, or a new one: only the lock's holder asks the IdP; the others wait
        for what it stores (or for its failure, remembered briefly so a flood of calls while
        the IdP refuses becomes one token request every FAILURE_TTL_MS)."""
        provider = self.provider
        token_key, lock_key, failed_key = client_token_keys(
            provider.issuer, provider.client_id, name, upstream.resource, upstream.scope
        )
        lease_ms = int((2 * provider.timeout + 1) * 1000)  # metadata, then the token request
        deadline = time.monotonic() + lease_ms / 1000 + provider.timeout
        poll = FIRST_POLL_SECONDS
        while True:
            cached = self._cached(token_key, failed_key)
            if cached is not None:
                return cached
            owner = secrets.token_urlsafe(16)
            if self.client.set(lock_key, owner, nx=True, px=lease_ms):
                try:
                    return self._cached(token_key, failed_key) or self._fetch(name, upstream, token_key, failed_key)
                finally:
                    self._release(keys=[lock_key], args=[owner])
            if time.monotonic() > deadline:
                raise BffError(503, "token_in_progress", "The API's token is being fetched; try again.")
            time.sleep(poll)  # backing off: a hanging IdP must not turn waiters into a Redis flood
            poll = min(poll * 2, MAX_POLL_SECONDS)

    def _cached(self, token_key: str, failed_key: str) -> str | None:
        sealed, failed = self.client.mget([token_key, failed_key])
        if failed:
            raise TokenRefused(failed.decode() if isinstance(failed, bytes) else str(failed))
        if not isinstance(sealed, bytes) or not sealed:
            return None
        try:
            return json.loads(self.cipher.open(sealed, token_key.encode()))["access_token"]
        except UnreadableTokens:  # sealed with a key since retired: fetch a new one
            return None

    def _fetch(self, name: str, upstream: Upstream, token_key: str, failed_key: str) -> str:
        try:
            answer = self.provider.client_credentials(resource=upstream.resource, scope=upstream.scope)
        except Exception as error:
            refused = error if isinstance(error, TokenRefused) else None
            code = refused.idp_error if refused else "idp_unavailable"
            metrics.CLIENT_TOKENS.labels(name, "refused" if refused else "idp_unavailable").inc()
            log.warning("upstream %s: no client-credentials token (%s)", name, code)
            self.client.set(failed_key, code, px=FAILURE_TTL_MS)  # whatever went wrong: not asked again at once
            raise
        ttl = _cache_seconds(answer.get("expires_in"), self.skew)
        sealed = self.cipher.seal(json.dumps({"access_token": answer["access_token"]}).encode(), token_key.encode())
        self.client.set(token_key, sealed, ex=ttl)
        metrics.CLIENT_TOKENS.labels(name, "fetched").inc()
        log.info("upstream %s: client-credentials token fetched (cached %d s)", name, ttl)
        return answer["access_token"]


def _cache_seconds(expires_in: object, skew: int) -> int:
    """Below the token's lifetime by the refresh skew (half its lifetime when that is shorter),
    so that no cached token expires on its way to the API; at most an hour; at least a second,
    so that an IdP handing out tokens that expire at once sees one request a second, not one
    per call."""
    lifetime = token_lifetime(expires_in)
    if lifetime is None:
        return NO_LIFETIME_TTL
    cached = lifetime - skew if lifetime > 2 * skew else lifetime // 2
    return max(1, min(cached, MAX_CACHE_SECONDS))
