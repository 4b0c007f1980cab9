"""docker/: the image and the compose stack are valid and agree with the BFF's own routes.

No Docker engine runs here, so the compose file is validated with `docker-compose config -q`
(Debian's package, installed by `make test`) and the rest is read as data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app import create_app
from app.config import load_settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def realm():
    return json.loads((DOCKER / "keycloak" / "demo-realm.json").read_text())


def test_compose_file_is_valid():
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is missing: `make test` installs it (apt-get install docker-compose)"
    result = subprocess.run([docker_compose, "-f", str(DOCKER / "compose.yaml"), "config", "-q"], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_compose_runs_bff_redis_keycloak_and_the_sample_api(compose):
    assert set(compose["services"]) == {"bff", "redis", "keycloak", "echo-api"}
    assert "--import-realm" in compose["services"]["keycloak"]["command"]


def test_the_realm_registers_exactly_the_bffs_urls(compose, realm):
    env = compose["services"]["bff"]["environment"]
    app = create_app(load_settings(env))
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    (client,) = [c for c in realm["clients"] if c["clientId"] == env["BFF_OIDC_CLIENT_ID"]]
    public = env["BFF_PUBLIC_URL"]
    assert client["secret"] == env["BFF_OIDC_CLIENT_SECRET"] and not client["publicClient"]
    assert client["redirectUris"] == [public + "/bff/callback"] and "/bff/callback" in routes
    assert client["attributes"]["post.logout.redirect.uris"] == public + "/"
    assert client["attributes"]["backchannel.logout.url"] == public + "/bff/backchannel-logout"
    assert "/bff/backchannel-logout" in routes
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    assert env["BFF_OIDC_ISSUER"] == f"http://localhost:8080/realms/{realm['realm']}"
    audience = client["protocolMappers"][0]["config"]["included.custom.audience"]
    assert audience == compose["services"]["echo-api"]["environment"]["ECHO_AUDIENCE"]
    assert realm["users"][0]["username"] == "demo"


def test_the_image_runs_gunicorn_as_a_non_root_user_with_a_healthcheck():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    bff_stage = dockerfile.split("AS bff", 1)[1]
    assert re.search(r"^FROM python:3\.\d+-slim AS base$", dockerfile, re.M)
    assert re.search(r"^USER 10001$", bff_stage, re.M)
    assert "HEALTHCHECK" in bff_stage and "/healthz" in bff_stage
    assert 'ENTRYPOINT ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]' in bff_stage
    assert "requirements-dev" not in dockerfile  # runtime dependencies only


def test_the_images_open_bind_is_documented_as_for_behind_a_buffering_proxy():
    """Slow clients hold gunicorn's threads (16 slow sockets starve 2 x 8): the image listens on
    every interface only for the proxy in front of it, and says so where the bind is set."""
    dockerfile = (DOCKER / "Dockerfile").read_text()
    comment = dockerfile.split("ENV BFF_BIND=0.0.0.0:8000")[0].rsplit("USER 10001", 1)[1]
    assert "BEHIND A BUFFERING PROXY" in comment
    readme = (DOCKER.parent / "README.md").read_text()
    assert "**Never expose gunicorn to browsers directly" in readme
