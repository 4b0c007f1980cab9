"""Where `/bff/user`'s CPU goes under load, in the real server: py-spy samples one gunicorn worker
(only threads holding the GIL, i.e. running Python) while wrk drives `/bff/user` with a live
session, then the separate naive app the same way; the samples are grouped by component and
turned into µs per request with the workers' CPU per request read from /proc. Prints a Markdown
table (README, "Benchmarks").

    .venv/bin/python -m bench.profile_load        (`make profile` installs py-spy and runs it)

Shares are of the time a worker runs Python; the rest of its CPU (system calls, waiting for the
GIL) is spread over the rows in proportion. Components nest: the first matching row, from the
top, takes a sample.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

from app.crypto import TokenCipher, parse_encryption_keys
from app.sessions import SessionStore
from bench.keys import NAIVE_KEY
from bench.run import LUA, cpu_seconds, worker_pids
from dev import forge
from dev.stack import DEV_TOKEN_ENCRYPTION_KEY, VENV_BIN, bff_env, free_port, start_bff, start_redis

SECONDS = 8
OTHER = "other (idle threads' bookkeeping, logging)"
# (label, frame names any of which puts a sample in the row), most specific first.
COMPONENTS = [
    ("Redis `GETEX` through redis-py (the naive app pays its `GET`)", ["execute_command redis/client.py"]),
    ("Flask-Session: open (cookie parse, SHA-256, msgpack decode)", ["open_session flask_session/base.py"]),
    ("JSON access line", ["write_access_line app/logs.py"]),
    ("latency histogram (prometheus-client, multiprocess)", ["observe prometheus_client/metrics.py"]),
    ("after hook: security headers, request id header", ["finish_request app/request_cycle.py"]),
    ("before hook: request id, declared body size", ["begin_request app/request_cycle.py"]),
    ("Flask-Session: save (read-only: `Vary` only)", ["save_session app/session_interface.py"]),
    ("the view: CSRF check, claims, JSON answer", ["dispatch_request flask/app.py"]),
    ("Flask: request context, routing, hook dispatch, teardown", ["wsgi_app flask/app.py"]),
    ("gunicorn: HTTP parsing, WSGI environ, writing the answer", ["handle gunicorn/workers/gthread.py"]),
]


def frame_name(frame: str) -> str:
    match = re.match(r"(.*?) \((.*?):\d+\)", frame)
    return f"{match.group(1)} {match.group(2)}" if match else frame


def profile(server, url: str, headers: list[str], work: Path) -> tuple[float, collections.Counter[str], int]:
    """(workers' CPU µs per request over the whole load, samples per component, samples)."""
    workers = worker_pids(server.process.pid, expected=2)
    cpu_before = sum(cpu_seconds(pid) for pid in workers)
    load = subprocess.Popen(
        ["wrk", "-t2", "-c16", f"-d{SECONDS + 2}s", "-s", str(LUA), *headers, url], stdout=subprocess.PIPE, text=True
    )
    raw = work / "samples.txt"
    spy = [str(VENV_BIN / "py-spy"), "record", "-p", str(workers[0]), "-d", str(SECONDS), "-r", "500"]
    subprocess.run([*spy, "-f", "raw", "-o", str(raw), "--nonblocking", "--gil"], check=True, capture_output=True)
    output = load.communicate()[0]
    cpu = sum(cpu_seconds(pid) for pid in workers) - cpu_before
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        frames = {frame_name(f) for f in stack.split(";")}
        total += int(n)
        counts[next((label for label, names in COMPONENTS if frames & set(names)), OTHER)] += int(n)
    return cpu / max(requests, 1) * 1e6, counts, total


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bff-profile-load-"))
    ports = {name: free_port() for name in ("redis", "bff", "naive")}
    services = [start_redis(ports["redis"], work)]
    try:
        url = f"redis://127.0.0.1:{ports['redis']}/0"
        client = redis.Redis.from_url(url)
        client.set(NAIVE_KEY, os.urandom(1024).hex())
        store = SessionStore(client, TokenCipher(parse_encryption_keys(DEV_TOKEN_ENCRYPTION_KEY)), 3600)
        forged = forge.stored_session(store, "profiled", sid="profiled-sid", claims={"name": "Bench User"})
        env = bff_env("http://localhost:8000", "http://127.0.0.1:9/realms/none", url, BENCH_NAIVE_REDIS_URL=url)
        bff = start_bff(ports["bff"], env, work / "bff.log")
        services.append(bff)
        naive = start_bff(ports["naive"], env, work / "naive.log", app="bench.naive_app:app", ready="/")
        services.append(naive)
        session = ["-H", f"Cookie: bff={forged.session_id}", "-H", "X-CSRF: 1"]
        user_us, user, user_total = profile(bff, f"http://127.0.0.1:{ports['bff']}/bff/user", session, work)
        naive_us, base, base_total = profile(naive, f"http://127.0.0.1:{ports['naive']}/", [], work)
        print(f"workers' CPU per request: /bff/user {user_us:.0f} µs, naive app {naive_us:.0f} µs\n")
        print("| Where the CPU goes under load (py-spy on a gunicorn worker) | `/bff/user` µs | naive app µs |")
        print("|---|---|---|")
        for label in [label for label, _ in COMPONENTS] + [OTHER]:
            ours = user[label] / max(user_total, 1) * user_us
            theirs = base[label] / max(base_total, 1) * naive_us
            print(f"| {label} | {ours:.0f} | {theirs:.0f} |" if theirs else f"| {label} | {ours:.0f} | - |")
        print(f"| **total** | **{user_us:.0f}** | **{naive_us:.0f}** |")
        return 0
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
