"""DESIGN §10 against the dev IdP: private_key_jwt (sign-in, refresh, revocation, a key rotation,
/bff/jwks) and PAR (the browser's authorization URL holds only client_id and request_uri)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc.jwk import ECKey, RSAKey

from app.client_auth import client_assertion, parse_client_keys
from dev.agent import Agent
from dev.stack import JWT_CLIENT_ID, bff_env, free_port, start_bff, start_idp

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def jwks(*keys) -> str:
    return json.dumps({"keys": [key.as_dict(private=True) for key in keys]})


def jwt_bff(stack, make_bff, *keys):
    """A BFF of the private_key_jwt client, on the port whose /bff/jwks the IdP reads, no secret."""
    return make_bff(
        port=stack.jwt_port,
        BFF_OIDC_CLIENT_ID=JWT_CLIENT_ID,
        BFF_OIDC_CLIENT_SECRET="",
        BFF_OIDC_CLIENT_KEY=jwks(*keys),
        BFF_API_UPSTREAMS=json.dumps({"echo": stack.echo_url}),
    )


def jwt_client_grants(stack) -> list[dict]:
    return [r for r in stack.issued.responses() if r.get("client_id") == JWT_CLIENT_ID]


def refresh_as_the_jwt_client(stack, key, refresh_token: str) -> requests.Response:
    (client_key,) = parse_client_keys(jwks(key))
    assertion = client_assertion(client_key, JWT_CLIENT_ID, f"{stack.issuer}/token")
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    return requests.post(f"{stack.issuer}/token", data=form, timeout=5)


@pytest.mark.parametrize(
    "key",
    [
        RSAKey.generate_key(2048, parameters={"kid": "jwt-rsa"}),
        ECKey.generate_key("P-256", parameters={"kid": "jwt-ec"}),
    ],
    ids=["RS256", "ES256"],
)
def test_private_key_jwt_signs_in_refreshes_and_revokes_without_any_secret(stack, make_bff, make_agent, key):
    bff = jwt_bff(stack, make_bff, key)
    published = requests.get(f"{bff.url}/bff/jwks", timeout=5)
    assert published.status_code == 200 and published.headers["Cache-Control"] == "no-store"
    (public,) = published.json()["keys"]
    assert public["kid"] == key.kid and "d" not in public
    agent = make_agent(bff.url)
    agent.login("jill")
    assert agent.get(f"{bff.url}/api/echo/x", headers={"X-CSRF": "1"}).json()["sub"] == "jill"
    stack.expire_access_token(agent.session_cookie)
    assert agent.get(f"{bff.url}/api/echo/y", headers={"X-CSRF": "1"}).status_code == 200
    grants = jwt_client_grants(stack)
    assert {g["grant_type"] for g in grants[-2:]} == {"authorization_code", "refresh_token"}
    refresh_token = grants[-1]["refresh_token"]
    assert agent.logout().status_code == 200
    assert "revocation at the IdP did not succeed" not in bff.service.log()
    # Revoked: the IdP refuses it even from its own client, with a valid assertion.
    refused = refresh_as_the_jwt_client(stack, key, refresh_token)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


def test_a_rotated_key_signs_and_the_idp_verifies_it_through_jwks_uri(stack, make_bff, make_agent):
    """Rotation as an operator does it: publish the new key beside the old one and sign with it
    (the first); the IdP, holding the old set, fetches /bff/jwks again for the unknown kid."""
    old = RSAKey.generate_key(2048, parameters={"kid": "rotation-old"})
    new = ECKey.generate_key("P-256", parameters={"kid": "rotation-new"})
    before = jwt_bff(stack, make_bff, old)
    agent = make_agent(before.url)
    agent.login("rory")
    before.service.stop()
    after = jwt_bff(stack, make_bff, new, old)
    assert [k["kid"] for k in requests.get(f"{after.url}/bff/jwks", timeout=5).json()["keys"]] == [
        "rotation-new",
        "rotation-old",
    ]
    stack.expire_access_token(agent.session_cookie)
    assert agent.get(f"{after.url}/api/echo/x", headers={"X-CSRF": "1"}).status_code == 200
    assert jwt_client_grants(stack)[-1]["grant_type"] == "refresh_token"
    assert agent.logout().status_code == 200 and "did not succeed" not in after.service.log()


def test_without_client_keys_there_is_no_jwks(stack):
    response = requests.get(f"{stack.bff_url}/bff/jwks", timeout=5)
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_with_par_the_browser_is_sent_with_only_client_id_and_request_uri(stack, make_agent):
    agent = make_agent()
    start = agent.get(f"{stack.bff_url}/bff/login", params={"returnUrl": "/"}, allow_redirects=False)
    assert start.status_code == 302
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert set(query) == {"client_id", "request_uri"} and query["request_uri"][0].startswith("urn:")
    agent.login("parker")
    assert agent.user().json()["sub"] == "parker"


@pytest.fixture
def par_required_idp(stack, workdir):
    idp_port, bff_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{idp_port}/realms/par"
    bff_url = f"http://localhost:{bff_port}"
    idp = start_idp(idp_port, issuer, workdir, [bff_url], IDP_REQUIRE_PAR="1")
    try:
        yield issuer, bff_url, bff_port
    finally:
        idp.stop()


def test_an_idp_that_requires_par_gets_it_and_par_never_is_named_as_the_mismatch(stack, workdir, par_required_idp):
    issuer, bff_url, bff_port = par_required_idp
    refusing = start_bff(
        bff_port,
        bff_env(bff_url, issuer, stack.redis_url, BFF_OIDC_PAR="never"),
        workdir / "bff-par-never.log",
        workers=1,
    )
    try:
        ready = requests.get(f"{bff_url}/readyz", timeout=5)
        assert ready.status_code == 503 and "BFF_OIDC_PAR: never" in ready.json()["error_description"]
        login = requests.get(f"{bff_url}/bff/login", allow_redirects=False, timeout=5)
        assert login.status_code == 502 and login.json()["error"] == "client_misconfigured"
    finally:
        refusing.stop()
    pushing = start_bff(bff_port, bff_env(bff_url, issuer, stack.redis_url), workdir / "bff-par-auto.log", workers=1)
    try:
        assert requests.get(f"{bff_url}/readyz", timeout=5).status_code == 200
        with Agent(bff_url, record=False) as agent:
            agent.login("pia")
            assert agent.user().json()["sub"] == "pia"
    finally:
        pushing.stop()
