"""A sample upstream API for the demo and the tests: `gunicorn dev.echo_api:app`.

It trusts nothing from the BFF but the JWT access token, which it checks against the IdP's JWKS
(issuer ECHO_ISSUER, audience ECHO_AUDIENCE: one resource, or several separated by commas, e.g. one
instance per resource server), then echoes who called (sub, null for a token without one; aud,
client_id, scope) and what arrived.
A few paths help the proxy tests: /slow?seconds=N, /bytes/N, /status/N, and /drip/NAME, which
sends one chunk, then waits for the file echo-release-NAME in the temporary folder before sending the rest (so a
test can prove the BFF relays bytes as they come, without a clock).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time

import requests
from flask import Flask, Response, jsonify, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ISSUER = os.environ.get("ECHO_ISSUER", "http://127.0.0.1:9000/realms/dev")
AUDIENCE = os.environ.get("ECHO_AUDIENCE", "urn:bff-dev:echo-api")
AUDIENCES = [audience.strip() for audience in AUDIENCE.split(",") if audience.strip()] or [AUDIENCE]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

app = Flask(__name__)
_keys: KeySet | None = None


def signing_keys(refresh: bool = False) -> KeySet:
    global _keys
    if _keys is None or refresh:
        meta = requests.get(f"{ISSUER}/.well-known/openid-configuration", timeout=5).json()
        _keys = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=5).json())
    return _keys


def caller() -> dict | None:
    """The access token's claims, or None when it is missing, forged, expired or not for us."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER}, aud={"essential": True, "values": AUDIENCES}, exp={"essential": True}
    )
    for refresh in (False, True):
        try:
            claims = jwt.decode(token, signing_keys(refresh), algorithms=["RS256", "PS256", "ES256", "EdDSA"]).claims
            registry.validate(claims)
            return claims
        except JoseError:
            continue
    return None


@app.route("/", defaults={"path": ""}, methods=METHODS)
@app.route("/<path:path>", methods=METHODS)
def echo(path: str) -> Response:
    claims = caller()
    if claims is None:
        response = jsonify(error="invalid_token", error_description="a valid access token is required")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    if path == "slow":
        time.sleep(float(request.args.get("seconds", "1")))
    if path.startswith("drip/"):
        return Response(_drip(path.split("/")[1]), mimetype="application/octet-stream")
    if path.startswith("bytes/"):
        size = int(path.split("/")[1])
        chunk = b"x" * 65536
        return Response((chunk[: min(65536, size - sent)] for sent in range(0, size, 65536)),
                        headers={"Content-Length": str(size)}, mimetype="application/octet-stream")  # fmt: skip
    body = request.get_data()
    response = jsonify(
        sub=claims.get("sub"),
        aud=claims.get("aud"),
        client_id=claims.get("client_id"),
        scope=claims.get("scope"),
        method=request.method,
        path="/" + path,
        query=request.query_string.decode(),
        body_length=len(body),
        body_sha256=hashlib.sha256(body).hexdigest(),
        headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
        token_expires_at=claims["exp"],
    )
    if path.startswith("status/"):
        response.status_code = int(path.split("/")[1])
    response.headers["Set-Cookie"] = "upstream=1; Path=/"  # the BFF must not pass this on
    return response


def release_path(name: str) -> str:
    return os.path.join(tempfile.gettempdir(), "echo-release-" + "".join(c for c in name if c.isalnum()))


def _drip(name: str):
    yield b"first chunk;"
    release = release_path(name)
    deadline = time.monotonic() + 10
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield b"second chunk"
