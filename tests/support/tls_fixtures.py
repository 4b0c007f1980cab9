"""A TLS stack (DESIGN §9): a BFF under gunicorn behind a real nginx over https, configured by
`flask nginx-config` as an operator would, with a certificate authority made for the run,
against the stack's IdP (which knows its URLs) and sample API. Two nginx servers front the same
BFF: one offloads `/api` (auth_request), one leaves it to the BFF's Python proxy. Shared by the
integration and browser tests; started once per run, on first use."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from dev.agent import Agent
from dev.stack import (
    VENV_BIN,
    IssuedTokens,
    Service,
    bff_env,
    free_port,
    start_bff,
    start_nginx,
)
from dev.tls import Certificates, make_certificates

SECRET = "nginx-authz-secret-0123456789abcdefghijkl"


@dataclass
class TlsStack:
    url: str  # https://localhost:<nginx>, offload mode
    python_url: str  # https://localhost:<second nginx>, python mode
    bff_log: Path
    nginx_home: Path
    certificates: Certificates
    issued: IssuedTokens

    def agent(self, url: str | None = None) -> Agent:
        agent = Agent(url or self.url)
        agent.verify = str(self.certificates.ca)
        agent.trust_env = False  # else REQUESTS_CA_BUNDLE, if set, would replace our CA
        return agent


def nginx_site(env: dict[str, str], *args: str) -> str:
    """`flask --app wsgi nginx-config`, run as an operator would."""
    command = [str(VENV_BIN / "flask"), "--app", "wsgi", "nginx-config", *args]
    done = subprocess.run(command, env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def tls(stack, workdir):
    bff_port = free_port()
    nginx_port, python_port = stack.tls_ports  # the stack's IdP knows their URLs
    url, python_url = f"https://localhost:{nginx_port}", f"https://localhost:{python_port}"
    certificates = make_certificates(workdir / "tls")
    services: list[Service] = []
    try:
        upstreams = {
            "cap": f"{stack.capture.url}/base",
            "closed": f"http://127.0.0.1:{free_port()}",
            "echo": stack.echo_url,
        }
        env = bff_env(
            url,
            stack.issuer,
            stack.redis_url,
            BFF_API_UPSTREAMS=json.dumps(upstreams),
            BFF_AUTHZ_SECRET=SECRET,
            BFF_TRUSTED_PROXIES="1",
            BFF_API_TIMEOUT="2",
            BFF_API_MAX_BODY="1000",  # small, so that the size limits are cheap to cross
        )
        log = workdir / f"bff-tls-{bff_port}.log"
        services.append(start_bff(bff_port, env, log, workers=2))
        common = ["--bff", f"127.0.0.1:{bff_port}", "--http-redirect", "0"]
        common += ["--cert", str(certificates.certificate), "--key", str(certificates.key)]
        offload = nginx_site(env, *common, "--listen", str(nginx_port))
        python = nginx_site(env, *common, "--listen", str(python_port), "--mode", "python")
        services.append(start_nginx(nginx_port, offload, workdir))
        services.append(start_nginx(python_port, python, workdir, name="nginx-python"))
        yield TlsStack(url, python_url, log, workdir / f"nginx-{nginx_port}", certificates, stack.issued)
    finally:
        for service in reversed(services):
            service.stop()
