"""`make run` and Ctrl-C: a terminal's SIGINT to the launcher's process group, after a signed-in
session on kept-alive connections, stops every process the launcher started and frees every port
(issue 10, item 9: gunicorn workers used to survive, deadlocked, still holding port 8000)."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from dev.agent import Agent
from dev.stack import ROOT, free_port

# Both runs share the checkout's .run/ folder (logs, the demo's certificate): one process runs them,
# one after the other, when the suite is spread over processes (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("make-run")

LAUNCHER = [str(ROOT / ".venv" / "bin" / "python"), "-m", "dev.run"]  # as `make run` starts it


def processes() -> dict[int, tuple[int, int]]:
    """Every live process as pid -> (parent pid, process group); zombies hold nothing and count as gone."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] != "Z":
            found[int(stat.parent.name)] = (int(fields[1]), int(fields[2]))
    return found


def descendants(root: int) -> dict[int, int]:
    """The live processes below `root` (and root itself), each with its process group."""
    table = processes()
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in table and pid not in found:
            found[pid] = table[pid][1]
            frontier += [child for child, (parent, _) in table.items() if parent == pid]
    return found


def read_until_running(launcher: subprocess.Popen, timeout: float = 60) -> str:
    """The launcher's output up to and including its banner."""
    output, deadline = "", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(launcher.stdout, selectors.EVENT_READ)
        while "Press Ctrl-C" not in output:
            assert time.monotonic() < deadline and launcher.poll() is None, output
            if selector.select(timeout=0.5):
                output += os.read(launcher.stdout.fileno(), 65536).decode(errors="replace")
    return output


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("tls", [False, True], ids=["make-run", "make-run-tls"])
def test_ctrl_c_after_a_signed_in_session_stops_every_process_and_frees_every_port(tls):
    bff_port, idp_port, tls_port = free_port(), free_port(), free_port()
    env = {**os.environ, "BFF_PORT": str(bff_port), "IDP_PORT": str(idp_port)}
    if tls:  # `make run-tls`: the same behind nginx over https
        env.update(BFF_TLS="1", TLS_PORT=str(tls_port))
    env.pop("BFF_REDIS_URL", None)  # its own redis-server, as on a fresh machine
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # A session of its own, so the launcher's process group is like a terminal's foreground group.
    launcher = subprocess.Popen(
        LAUNCHER, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    started: dict[int, int] = {}
    agent = None
    try:
        banner = read_until_running(launcher)
        assert "BFF demo running" in banner
        bff_url = f"https://localhost:{tls_port}" if tls else f"http://localhost:{bff_port}"
        assert f"running:  {bff_url}" in banner
        ca = re.search(r"trust (\S+ca\.pem)", banner)[1] if tls else True
        assert requests.get(f"{bff_url}/healthz", timeout=5, verify=ca).ok
        echo_port = int(re.search(r"\(port (\d+)\)", banner)[1])
        redis_port = int(re.search(r"redis://127\.0\.0\.1:(\d+)/", banner)[1])
        ports = [bff_port, idp_port, echo_port, redis_port] + ([tls_port] if tls else [])

        agent = Agent(bff_url, record=False)  # its connections stay open to the end
        agent.verify, agent.trust_env = ca, False
        agent.login("ctrl-c")
        assert agent.get(f"{bff_url}/api/echo/x", headers={"X-CSRF": "1"}).status_code == 200
        assert agent.logout().ok
        # A moment's pause, as before a person presses Ctrl-C: the workers are idle, their connections
        # kept alive. (With the old launcher, the deadlock showed here only after such a pause.)
        time.sleep(2.5)

        started = descendants(launcher.pid)
        # launcher, redis-server, node, and gunicorn's master and two workers for the API and the BFF
        # (and nginx's master and worker for make run-tls)
        assert len(started) >= (11 if tls else 9), started
        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in the terminal does

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            left = {pid: pgid for pid, (_, pgid) in processes().items() if pid in started or pgid in started.values()}
            if launcher.poll() is not None and not left and not any(map(port_is_open, ports)):
                break
            time.sleep(0.1)
        exited = launcher.poll() is not None
        output = banner + (launcher.stdout.read().decode(errors="replace") if exited else "")
        assert launcher.poll() == 0, output
        assert left == {}, f"still running: {left}\n{output}"
        assert [port for port in ports if port_is_open(port)] == []
    finally:
        if agent is not None:
            agent.close()
        # Whatever this run leaves behind is killed, so a failure does not hold the ports.
        groups = {launcher.pid, *started.values()}
        for pid, (_, pgid) in processes().items():
            if pgid in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        launcher.wait(10)
