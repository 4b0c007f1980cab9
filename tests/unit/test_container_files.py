"""docker/: the image and the compose stack are valid and agree with the BFF's own routes.

No Docker engine runs here, so the compose file is validated with `docker-compose config -q`
(Debian's package, installed by `make test`) and the rest is read as data; the nginx-setup
service's command is run here as written, and nginx checks what it wrote."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app import create_app
from app.config import load_settings
from app.nginx_config import NginxOptions, render
from dev.stack import NGINX

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


def test_compose_runs_nginx_bff_redis_keycloak_and_the_sample_api(compose):
    services = compose["services"]
    assert set(services) == {"nginx", "nginx-setup", "bff", "redis", "keycloak", "echo-api"}
    assert "--import-realm" in services["keycloak"]["command"]
    # nginx starts from what the set-up wrote, in front of a BFF that is up, on the BFF's settings.
    assert services["nginx"]["depends_on"]["nginx-setup"]["condition"] == "service_completed_successfully"
    assert services["nginx"]["depends_on"]["bff"]["condition"] == "service_healthy"
    assert services["nginx-setup"]["environment"] == services["bff"]["environment"]


def test_the_compose_nginx_runs_the_generators_configuration(compose, tmp_path):
    """The nginx-setup command, run as written (with its volume in a temporary folder): it makes a
    certificate and calls `flask nginx-config`, whose output is the generator's for the BFF's
    environment, and the image's one site includes it; `nginx -t` accepts the whole."""
    setup, nginx = compose["services"]["nginx-setup"], compose["services"]["nginx"]
    env = setup["environment"]
    volume = tmp_path / "volume"
    volume.mkdir()
    mounts = {target.split(":")[0]: target.split(":")[1] for target in nginx["volumes"]}
    in_nginx = mounts["nginx-site"]  # /etc/nginx/bff
    script = setup["command"][2].replace("/srv/nginx", str(volume))
    bin_dir = str(Path(sys.executable).parent)  # the venv's python and flask stand in for the image's
    run_env = {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(DOCKER.parent)}
    result = subprocess.run(["sh", "-c", script], cwd=DOCKER.parent, env=run_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    site = (volume / "site.conf").read_text()
    words = shlex.split(script)
    flags = dict(itertools.pairwise(words))  # each word and the one after it
    options = NginxOptions(flags["--bff"], int(flags["--listen"]), None, flags["--cert"], flags["--key"], "offload")
    assert site == render(load_settings(env), options)
    assert f"server {env['BFF_BIND']};" in site and "auth_request /_bff_authz;" in site
    assert (volume / "site.conf").stat().st_mode & 0o077 == 0  # it holds BFF_AUTHZ_SECRET

    default_conf = (DOCKER / "nginx" / "default.conf").read_text()
    assert mounts["./nginx/default.conf"] == "/etc/nginx/conf.d/default.conf"
    home = tmp_path / "nginx"
    (home / "logs").mkdir(parents=True)
    (home / "default.conf").write_text(default_conf.replace(in_nginx, str(volume)))
    (volume / "site.conf").write_text(site.replace(in_nginx, str(volume)))
    (home / "nginx.conf").write_text(
        f"pid {home}/nginx.pid; error_log stderr; events {{}}\n"
        f"http {{ access_log off; include {home}/default.conf; }}\n"
    )
    checked = subprocess.run([NGINX, "-t", "-p", str(home), "-c", str(home / "nginx.conf")], capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()


def test_the_realm_registers_exactly_the_bffs_urls(compose, realm):
    env = compose["services"]["bff"]["environment"]
    app = create_app(load_settings(env))
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    (client,) = [c for c in realm["clients"] if c["clientId"] == env["BFF_OIDC_CLIENT_ID"]]
    public = env["BFF_PUBLIC_URL"]
    assert client["secret"] == env["BFF_OIDC_CLIENT_SECRET"] and not client["publicClient"]
    assert client["redirectUris"] == [public + "/bff/callback"] and "/bff/callback" in routes
    assert client["attributes"]["post.logout.redirect.uris"] == public + "/"
    # Keycloak does not trust the stack's throwaway CA: it posts to gunicorn, beside nginx.
    assert client["attributes"]["backchannel.logout.url"] == f"http://{env['BFF_BIND']}/bff/backchannel-logout"
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
