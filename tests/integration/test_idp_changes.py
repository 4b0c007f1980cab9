"""The IdP changes under a running BFF: it goes down, or rotates its signing keys."""

from __future__ import annotations

import json
import signal

import pytest
from joserfc.jwk import RSAKey

from dev.agent import Agent
from dev.stack import bff_env, free_port, start_bff, start_idp


@pytest.fixture
def private_idp_stack(stack, workdir):
    """An IdP and a BFF of this test's own, so the IdP can be frozen and killed."""
    idp_port, bff_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{idp_port}/realms/outage"
    bff_url = f"http://localhost:{bff_port}"
    idp = start_idp(idp_port, issuer, workdir, [bff_url])
    env = bff_env(bff_url, issuer, stack.redis_url, BFF_REVOCATION_TIMEOUT="0.5")
    bff = start_bff(bff_port, env, workdir / "bff-outage.log", workers=1)
    try:
        yield idp, issuer, bff_url
    finally:
        idp.process.send_signal(signal.SIGCONT)
        bff.stop()
        idp.stop()


@pytest.mark.parametrize("outage", ["frozen", "gone"])
def test_logout_succeeds_when_the_idp_cannot_revoke(stack, private_idp_stack, outage):
    idp, issuer, bff_url = private_idp_stack
    with Agent(bff_url, record=False) as agent:
        agent.login("uma")
        keys_before = stack.session_keys()
        if outage == "frozen":  # accepts connections, never answers: the timeout must bound it
            idp.process.send_signal(signal.SIGSTOP)
        else:
            idp.process.kill()
            idp.process.wait()
        response = agent.logout()
        assert response.status_code == 200
        assert response.json()["logout_url"].startswith(f"{issuer}/session/end?")
        assert len(stack.session_keys()) == len(keys_before) - 1
        assert agent.user().status_code == 401


def _jwks_file(workdir, kid: str):
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})
    path = workdir / f"jwks-{kid}.json"
    path.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    return str(path)


def test_the_idp_rotating_its_signing_key_needs_no_bff_restart(stack, workdir):
    idp_port, bff_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{idp_port}/realms/rotation"
    bff_url = f"http://localhost:{bff_port}"
    idp = start_idp(idp_port, issuer, workdir, [bff_url], IDP_JWKS_FILE=_jwks_file(workdir, "before"))
    bff = start_bff(bff_port, bff_env(bff_url, issuer, stack.redis_url), workdir / "bff-rotation.log", workers=1)
    try:
        with Agent(bff_url, record=False) as agent:
            agent.login("rita")  # the BFF now caches the JWKS holding only "before"
        idp.stop()
        idp = start_idp(idp_port, issuer, workdir, [bff_url], IDP_JWKS_FILE=_jwks_file(workdir, "after"))
        with Agent(bff_url, record=False) as agent:
            agent.login("rita")  # signed with "after": an unknown kid, so the BFF refetches the JWKS
            assert agent.user().json()["sub"] == "rita"
    finally:
        bff.stop()
        idp.stop()
