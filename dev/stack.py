"""Start the real components: redis-server, the dev IdP (node) and the BFF (gunicorn).

One place for both `make run` (dev/run.py) and the test fixtures, so the demo and the tests
start the stack the same way.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote_plus

import redis
import requests

from app.crypto import generate_key

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"


_HANDED_OUT: set[int] = set()  # ports this process has given out: never the same one twice
WORKER_SPAN = 5000  # ports per pytest-xdist worker, below the kernel's ephemeral range
WORKER_BASE = 12000  # worker N draws from [12000 + 5000 N, 17000 + 5000 N); cluster buses 10000 above


def _worker_span() -> tuple[int, int] | None:
    """Under pytest-xdist, this worker's own range of ports. The suite reserves ports long before
    a service binds them (nginx's, a test's own BFF): drawn from one kernel pool, a port reserved
    by one worker could be handed to the other meanwhile. None outside xdist (or beyond two
    workers, or when the kernel's ephemeral ports start too low): the kernel chooses."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit() or int(worker[2:]) > 1:
        return None
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        ephemeral_start = int(ranges.read().split()[0])
    low = WORKER_BASE + int(worker[2:]) * WORKER_SPAN
    return (low, low + WORKER_SPAN) if low + WORKER_SPAN + 10000 <= ephemeral_start else None


def _bindable(port: int) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def free_port() -> int:
    """A port nothing listens on, never one this process handed out before."""
    span = _worker_span()
    while True:
        if span is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        else:
            port = random.randrange(*span)  # noqa: S311 - not a secret
            if not _bindable(port):
                continue
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def free_cluster_port() -> int:
    """A free port for a cluster node, with its bus port (+10000) free too (at most 55535)."""
    span = _worker_span() or (20000, 45536)
    while True:
        port = random.randrange(*span)  # noqa: S311 - not a secret
        if port not in _HANDED_OUT and _bindable(port) and _bindable(port + 10000):
            _HANDED_OUT.add(port)
            return port


class Service:
    """A child process with its output in a log file, in a session and process group of its own (so a
    terminal's Ctrl-C reaches only whoever started it), stopped with everything it started on
    `stop()` (or by `stop_all()`)."""

    running: ClassVar[set[Service]] = set()
    _started = itertools.count()

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None, cwd=ROOT):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.pgid = self.process.pid  # a new session's leader: its group's id is its pid
        self._order = next(Service._started)
        Service.running.add(self)

    def wait_until(self, ready, timeout: float = 20.0) -> None:
        """Poll `ready` until it holds; a service that never gets there is stopped, not left behind."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            try:
                if ready():
                    return
            except (requests.RequestException, redis.RedisError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """One `sig` to the process (gunicorn's master then stops its workers gracefully); once it has
        exited, or after `timeout` seconds, SIGKILL to whatever is left of its group (workers of a
        master that could not stop them keep its group id); returns when none of them is left."""
        Service.running.discard(self)
        if self.process.returncode is None:
            # Not reaped yet, so no other process can have been given its pid as an id: the group is ours.
            if not self._exited():
                os.kill(self.process.pid, sig)
                deadline = time.monotonic() + timeout
                while not self._exited() and time.monotonic() < deadline:
                    time.sleep(0.02)
            self._kill_group()
            self.process.wait()
        elif not Path(f"/proc/{self.pgid}").exists():
            # Reaped elsewhere (poll, wait): the group is still ours unless its id was given out again.
            self._kill_group()
        self._log.close()

    def _exited(self) -> bool:
        """Whether the process has exited, without reaping it (waitid's WNOWAIT)."""
        try:
            return os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _kill_group(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while group_members(self.pgid) and time.monotonic() < deadline:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.02)

    @classmethod
    def stop_all(cls) -> None:
        """Whatever is still running (a fixture that failed half-way), newest first."""
        for service in sorted(cls.running, key=lambda s: s._order, reverse=True):
            service.stop()


def group_members(pgid: int) -> list[int]:
    """The live processes (zombies hold nothing) in process group `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue  # gone meanwhile
        if int(group) == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def _redis_server() -> str:
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError(
            "redis-server is not installed: run `make test` (it installs it) or apt-get install redis-server"
        )
    return server


def start_redis(port: int, workdir: Path, *extra: str, name: str = "redis") -> Service:
    """A throwaway redis-server: in memory, on loopback (`SHUTDOWN SAVE` still writes its dump)."""
    args = [_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    service = Service(name, [*args, "--dir", str(workdir), *extra], workdir / f"{name}-{port}.log")
    client = redis.Redis(port=port)
    service.wait_until(client.ping)
    client.close()
    return service


def start_redis_cluster(ports: list[int], workdir: Path) -> list[Service]:
    """Masters with no replicas, slots spread by `redis-cli --cluster create` (about 2 s)."""
    nodes = []
    for port in ports:
        node_dir = workdir / f"cluster-{port}"
        node_dir.mkdir(exist_ok=True)
        nodes.append(start_redis(port, node_dir, "--cluster-enabled", "yes", name="redis-cluster"))
    subprocess.run(
        ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
         "--cluster-yes"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    # Every node must see the cluster as ok, not only the first: a node still converging answers
    # "CLUSTERDOWN The cluster is down" to the first commands routed to it.
    for node, port in zip(nodes, ports, strict=True):
        client = redis.Redis(port=port)
        node.wait_until(lambda c=client: "cluster_state': 'ok" in str(c.execute_command("CLUSTER INFO")))
        client.close()
    return nodes


def start_redis_sentinel(master_port: int, replica_port: int, sentinel_port: int, workdir: Path) -> list[Service]:
    """A master, its replica and one sentinel watching them as `mymaster` (quorum 1)."""
    master = start_redis(master_port, workdir, name="redis-master")
    replica = start_redis(replica_port, workdir, "--replicaof", "127.0.0.1", str(master_port), name="redis-replica")
    conf = workdir / f"sentinel-{sentinel_port}.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n"
    )
    sentinel = Service("redis-sentinel", [_redis_server(), str(conf), "--sentinel"], workdir / "sentinel.log")
    client = redis.Redis(port=sentinel_port)
    sentinel.wait_until(lambda: client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"))
    client.close()
    return [master, replica, sentinel]


# One secret for every BFF this process starts, as instances sharing one Redis must share it.
DEV_SECRET_KEY = secrets.token_urlsafe(32)
DEV_TOKEN_ENCRYPTION_KEY = generate_key()
API_AUDIENCE = "urn:bff-dev:echo-api"
REPORTS_AUDIENCE = "urn:bff-dev:reports-api"  # the dev IdP's second resource (IDP_REPORTS_AUDIENCE)
JWT_CLIENT_ID = "bff-dev-jwt"  # the dev IdP's private_key_jwt client (IDP_JWT_CLIENT_ID)
CLIENT_ID = "bff-dev"
# The dev IdP's, known to all. Its odd characters prove client authentication encodes them (RFC 6749 §2.3.1).
CLIENT_SECRET = "dev secret+with/odd%chars:0123456789"  # noqa: S105
BASIC_AUTH = (quote_plus(CLIENT_ID), quote_plus(CLIENT_SECRET))  # for tests calling the IdP directly


def start_idp(port: int, issuer: str, workdir: Path, bff_urls: list[str], **extra_env: str) -> Service:
    """The dev IdP, registering each BFF's callback and post-logout URLs and (the first BFF's)
    back-channel logout endpoint."""
    env = {
        "IDP_BACKCHANNEL_LOGOUT_URI": f"{bff_urls[0]}/bff/backchannel-logout",
        "IDP_API_AUDIENCE": API_AUDIENCE,
        "IDP_ISSUER": issuer,
        "IDP_PORT": str(port),
        "IDP_CLIENT_ID": CLIENT_ID,
        "IDP_CLIENT_SECRET": CLIENT_SECRET,
        "IDP_JWT_CLIENT_ID": JWT_CLIENT_ID,
        "IDP_REPORTS_AUDIENCE": REPORTS_AUDIENCE,
        "IDP_REDIRECT_URIS": " ".join(f"{url}/bff/callback" for url in bff_urls),
        "IDP_POST_LOGOUT_REDIRECT_URIS": " ".join(f"{url}/bff/logged-out {url}/" for url in bff_urls),
        **extra_env,
    }
    service = Service("idp", ["node", "server.js"], workdir / "idp.log", env, cwd=ROOT / "dev" / "idp")
    service.wait_until(lambda: requests.get(f"{issuer}/.well-known/openid-configuration", timeout=1).ok)
    return service


class IssuedTokens:
    """What the dev IdP records in IDP_ISSUED_TOKENS_FILE: one JSON line per token response."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def responses(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []

    def all(self) -> set[str]:
        """Every access, refresh and id token issued so far."""
        kinds = ("access_token", "refresh_token", "id_token")
        return {response[k] for response in self.responses() for k in kinds if response.get(k)}

    def latest(self) -> dict:
        return self.responses()[-1]

    def spent_refresh_tokens(self) -> list[str]:
        """The refresh token each successful refresh presented, in order."""
        return [r["presented_refresh_token"] for r in self.responses() if r["grant_type"] == "refresh_token"]


def start_echo(port: int, issuer: str, workdir: Path, audience: str = "") -> Service:
    """The sample API, checking access tokens from the IdP at `issuer` for `audience` (by
    default the echo API's; REPORTS_AUDIENCE for the second sample resource)."""
    args = [str(VENV_BIN / "gunicorn"), "-c", "/dev/null", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    args += ["--threads", "16", "--no-control-socket"]  # not the BFF's gunicorn.conf.py: a plain threaded server
    env = {"ECHO_ISSUER": issuer, "ECHO_AUDIENCE": audience or API_AUDIENCE}
    log = workdir / (f"echo-api-{port}.log" if audience else "echo-api.log")
    service = Service("echo-api", [*args, "dev.echo_api:app"], log, env)
    service.wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 401)
    return service


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(port: int, site: str, workdir: Path, name: str = "nginx") -> Service:
    """nginx in the foreground with `site` (e.g. `flask nginx-config`'s output) as its `http`
    block, every file under a folder of its own, ready once `port` accepts connections."""
    home = workdir / f"{name}-{port}"
    (home / "temp").mkdir(parents=True, exist_ok=True)
    (home / "site.conf").write_text(site)
    temp = home / "temp"
    (home / "nginx.conf").write_text(
        f"""worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/error.log warn;
{"user root root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 1024; }}
http {{
    access_log {home}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {home}/site.conf;
}}
"""
    )
    args = [NGINX, "-p", str(home), "-c", str(home / "nginx.conf"), "-g", "daemon off;"]
    service = Service(name, args, home / "stdout.log")

    def accepting() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    service.wait_until(accepting)
    return service


def bff_env(public_url: str, issuer: str, redis_url: str, **overrides: str) -> dict[str, str]:
    return {
        "BFF_PUBLIC_URL": public_url,
        "BFF_OIDC_ISSUER": issuer,
        "BFF_OIDC_CLIENT_ID": CLIENT_ID,
        "BFF_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "BFF_REDIS_URL": redis_url,
        "BFF_SECRET_KEY": DEV_SECRET_KEY,
        "BFF_TOKEN_ENCRYPTION_KEY": DEV_TOKEN_ENCRYPTION_KEY,
        # The dev IdP, like oidc-provider's default and LemonLDAP::NG, grants offline_access (a
        # refresh token) only when the sign-in asks for consent (OpenID Connect Core §11).
        "BFF_OIDC_PROMPT": "consent",
        # Stopped by Ctrl-C or a test's end, not by a deploy: no need to linger over kept-alive
        # connections (gunicorn waits up to 2 s on them) before exiting.
        "BFF_GRACEFUL_TIMEOUT": "1",
        **overrides,
    }


def start_bff(
    port: int,
    env: dict[str, str],
    log_path: Path,
    workers: int = 2,
    app: str = "wsgi:app",
    ready: str = "/healthz",
    checkout: Path = ROOT,
) -> Service:
    """The BFF (or another WSGI `app`, e.g. a benchmark baseline) under the BFF's own gunicorn.conf.py,
    from this checkout or another one (`make bench` can compare two)."""
    args = [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    service = Service("bff", [*args, "--workers", str(workers), app], log_path, env, cwd=checkout)
    service.wait_until(lambda: requests.get(f"http://127.0.0.1:{port}{ready}", timeout=1).ok)
    return service
