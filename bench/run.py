"""`make bench`: measured speed, side by side. Never asserted anywhere.

Starts its own redis-server, dev IdP, sample API and the BFF under the production gunicorn
settings (gunicorn.conf.py), signs one user in through the IdP, pre-creates sessions with the
project's own store code, then drives wrk (2 threads, 16 connections, reconnecting every 50th
request) over each row for BENCH_SECONDS, alternating the rows over BENCH_ROUNDS rounds, and
records each worker's share of the BFF's CPU. Writes bench/results/latest.json and latest.png.

Environment: BENCH_SECONDS (5), BENCH_ROUNDS (2), BENCH_BIG_SESSIONS (1000000), BENCH_ROWS (a
comma-separated list of words: only the rows whose name holds one of them, for measuring a change
quickly; such a partial run skips the scale and back-channel figures and writes partial.json),
BENCH_COMPARE (the path of another checkout, e.g. a `git worktree` of the previous commit: its
BFF is served too, and every BFF row is measured on both, alternated, in the same run).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis
import requests
from joserfc.jwk import RSAKey

from app.crypto import TokenCipher, parse_encryption_keys
from app.keyspace import SessionRef, record_key, sid_index_key, user_index_key
from app.sessions import SessionStore
from bench.keys import NAIVE_KEY
from dev import forge
from dev.agent import Agent
from dev.stack import (
    DEV_TOKEN_ENCRYPTION_KEY,
    ROOT,
    Service,
    bff_env,
    free_port,
    start_bff,
    start_echo,
    start_idp,
    start_nginx,
    start_redis,
)
from dev.tls import local_nginx_site, make_certificates

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
BIG = int(os.environ.get("BENCH_BIG_SESSIONS", "1000000"))
RESULTS = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "reconnect.lua"
IDLE = 8 * 3600
COMPARE = Path(os.environ["BENCH_COMPARE"]).resolve() if os.environ.get("BENCH_COMPARE") else None
ONLY = [word.strip() for word in os.environ.get("BENCH_ROWS", "").split(",") if word.strip()]


def wrk(url: str, headers: dict[str, str], connections: int = 16, threads: int = 2) -> dict:
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{SECONDS}s", "--latency", "-s", str(LUA)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
        "errors": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def worker_pids(master: int, expected: int = 1) -> list[int]:
    """The children of `master`, once there are at least `expected` of them (gunicorn answers
    its first request before its last worker has forked: counting too early halves the CPU)."""
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(["ps", "--ppid", str(master), "-o", "pid="], capture_output=True, text=True).stdout
        pids = sorted(int(p) for p in out.split())
        if len(pids) >= expected or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if not k.startswith(("cmdstat_info", "cmdstat_config")))


def fake_sessions(store: SessionStore, tokens: dict, count: int, sub_prefix: str, same_user: bool = False):
    items = []
    for i in range(count):
        sub = sub_prefix if same_user else f"{sub_prefix}-{i}"
        forged = forge.session_record(
            store,
            sub,
            sid=f"{sub_prefix}-sid-{i}",
            max_lifetime=24 * 3600,
            claims={"name": "Bench User", "email": "bench@example.com"},
            user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0",
            client_ip="203.0.113.10",
            **tokens,
        )
        items.append((forged.ref, forged.record))
    store.write_many(items)
    return items


def main() -> int:
    work = ROOT / ".run" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    names = ("redis", "idp", "echo", "bff", "bare", "naive", "compare", "nginx", "nginx_alone")
    ports = {name: free_port() for name in names}
    issuer = f"http://127.0.0.1:{ports['idp']}/realms/bench"
    bff = f"http://localhost:{ports['bff']}"
    redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
    key = RSAKey.generate_key(2048, parameters={"kid": "bench", "use": "sig", "alg": "RS256"})
    (work / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    tokens_file = work / "issued.jsonl"
    tokens_file.unlink(missing_ok=True)
    services: list[Service] = []
    try:
        services.append(start_redis(ports["redis"], work))
        services.append(
            start_idp(
                ports["idp"],
                issuer,
                work,
                [bff],
                IDP_ACCESS_TOKEN_TTL="7200",
                IDP_JWKS_FILE=str(work / "jwks.json"),
                IDP_ISSUED_TOKENS_FILE=str(tokens_file),
            )
        )
        services.append(start_echo(ports["echo"], issuer, work))
        env = bff_env(
            bff,
            issuer,
            redis_url,
            BFF_API_UPSTREAMS=json.dumps({"echo": f"http://127.0.0.1:{ports['echo']}"}),
            BFF_AUTHZ_SECRET=AUTHZ_SECRET,
        )
        server = start_bff(ports["bff"], env, work / "bff.log", app="bench.app:app")
        services.append(server)
        services.append(start_nginx(ports["nginx"], nginx_site(env, ports, work), work, name="nginx-bench"))
        # The baselines: separate minimal apps under the very same gunicorn settings.
        baseline_env = {**env, "BENCH_NAIVE_REDIS_URL": redis_url}
        bare = start_bff(ports["bare"], baseline_env, work / "bare.log", app="bench.bare_app:app", ready="/")
        naive = start_bff(ports["naive"], baseline_env, work / "naive.log", app="bench.naive_app:app", ready="/")
        services += [bare, naive]
        servers = {"bff": server, "bare": bare, "naive": naive, "echo": services[2], "nginx": services[4]}
        if COMPARE:
            log = work / "compare.log"
            servers["compare"] = start_bff(ports["compare"], env, log, app="bench.app:app", checkout=COMPARE)
            services.append(servers["compare"])
        return measure(ports, issuer, bff, redis_url, tokens_file, key, servers)
    finally:
        for service in reversed(services):
            service.stop()


AUTHZ_SECRET = "bench-authz-secret-0123456789abcdefghij"  # noqa: S105 - a throwaway for the run


def nginx_site(env: dict[str, str], ports: dict[str, int], work: Path) -> str:
    """One nginx (one worker) for three rows: the BFF's generated configuration (offload mode,
    plus an `/api/python/` location sending the same upstream through the BFF's Python proxy),
    and a second https server proxying straight to the sample API (nginx alone)."""
    certificates = make_certificates(work / "tls")
    tls = f"ssl_certificate {certificates.certificate}; ssl_certificate_key {certificates.key};"
    site = local_nginx_site(env, ports["bff"], ports["nginx"], certificates)
    python_mode = "    location /api/python/ {\n        rewrite ^/api/python/(.*)$ /api/echo/$1 break;\n"
    python_mode += "        proxy_pass http://bff_app;\n    }\n"
    site = site.replace("    location / {\n", python_mode + "\n    location / {\n", 1)
    return site + (
        f"\nupstream bench_echo {{ server 127.0.0.1:{ports['echo']}; keepalive 16; }}\n"
        f"server {{\n    listen {ports['nginx_alone']} ssl http2;\n    {tls}\n"
        "    location / {\n        proxy_pass http://bench_echo;\n        proxy_http_version 1.1;\n"
        '        proxy_set_header Connection "";\n    }\n}\n'
    )


def measure(ports, issuer, bff, redis_url, tokens_file, key, servers) -> int:
    client = redis.Redis.from_url(redis_url)
    client.set(NAIVE_KEY, os.urandom(1024).hex())  # 2 KB
    store = SessionStore(client, TokenCipher(parse_encryption_keys(DEV_TOKEN_ENCRYPTION_KEY)), IDLE)
    agent = Agent(bff, record=False)
    agent.login("bench")
    cookie = agent.session_cookie
    real_tokens = json.loads(tokens_file.read_text().splitlines()[-1])
    fake_sessions(store, {**real_tokens, "expires_in": 7200}, 999, "filler")
    bff_direct = f"http://127.0.0.1:{ports['bff']}"
    nginx, nginx_alone = f"https://localhost:{ports['nginx']}", f"https://localhost:{ports['nginx_alone']}"
    session_headers = {"Cookie": f"bff={cookie}", "X-CSRF": "1"}
    echo_headers = {"Authorization": f"Bearer {real_tokens['access_token']}"}
    # (URL, headers, the servers whose workers' CPU the row costs)
    rows = {
        "bare Flask app (separate)": (f"http://127.0.0.1:{ports['bare']}/", {}, ["bare"]),
        "naive Redis GET 2 KB app (separate)": (f"http://127.0.0.1:{ports['naive']}/", {}, ["naive"]),
        "bare JSON inside the BFF app": (f"{bff_direct}/bench/bare", {}, ["bff"]),
        "naive GET inside the BFF app": (f"{bff_direct}/bench/naive", {}, ["bff"]),
        "/bff/user": (f"{bff_direct}/bff/user", session_headers, ["bff"]),
        "/api/echo via the BFF": (f"{bff_direct}/api/echo/data", session_headers, ["bff", "echo"]),
        "echo through nginx alone (https)": (f"{nginx_alone}/data", echo_headers, ["nginx", "echo"]),
        "/api/echo, nginx + the BFF's proxy (https)": (
            f"{nginx}/api/python/data",
            session_headers,
            ["nginx", "bff", "echo"],
        ),
        "/api/echo, nginx offload + /bff/authz (https)": (
            f"{nginx}/api/echo/data",
            session_headers,
            ["nginx", "bff", "echo"],
        ),
        "echo upstream direct": (f"http://127.0.0.1:{ports['echo']}/data", echo_headers, ["echo"]),
    }
    if COMPARE:
        compare_direct = f"http://127.0.0.1:{ports['compare']}"
        paired = {}
        for name, (url, headers, costs) in rows.items():
            paired[name] = (url, headers, costs)
            if costs[0] == "bff":  # right after its row, so that both see the same machine
                compared = url.replace(bff_direct, compare_direct)
                paired[f"{name} [{COMPARE.name}]"] = (compared, headers, ["compare", *costs[1:]])
        rows = paired
    if ONLY:
        rows = {name: row for name, row in rows.items() if any(word in name for word in ONLY)}
    runs: dict[str, list[dict]] = {name: [] for name in rows}
    expected = {"nginx": 1}  # one nginx worker; gunicorn's servers here run 2
    workers = {name: worker_pids(server.process.pid, expected.get(name, 2)) for name, server in servers.items()}
    for round_number in range(ROUNDS):
        for name, (url, headers, costs) in rows.items():
            pids = [pid for server in costs for pid in workers[server]]
            cpu_before = {pid: cpu_seconds(pid) for pid in pids}
            calls_before = redis_calls(client)
            result = wrk(url, headers)
            calls = redis_calls(client) - calls_before
            used = {pid: cpu_seconds(pid) - cpu_before[pid] for pid in pids}
            served = max(result["requests"], 1)
            result["redis_commands_per_request"] = round(calls / served, 3)
            result["cpu_us_per_request"] = {
                server: round(sum(used[pid] for pid in workers[server]) / served * 1e6) for server in costs
            }
            first = workers[costs[0]]
            total = sum(used[pid] for pid in first) or 1.0
            result["worker_cpu_share"] = [round(used[pid] / total, 2) for pid in first]
            runs[name].append(result)
            print(f"round {round_number + 1} {name}: {result['rps']:.0f} req/s, {result['cpu_us_per_request']} µs CPU")

    table = []
    naive_runs = runs.get("naive Redis GET 2 KB app (separate)") or [{"rps": float("nan")}]
    naive_rps = statistics.median(r["rps"] for r in naive_runs)
    for name, results in runs.items():
        rps = statistics.median(r["rps"] for r in results)
        costs = rows[name][2]
        table.append(
            {
                "row": name,
                "rps": round(rps),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in results), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in results), 2),
                "ratio_to_naive": round(rps / naive_rps, 2),
                "cpu_us_per_request": {
                    s: round(statistics.median(r["cpu_us_per_request"][s] for r in results)) for s in costs
                },
                "redis_commands_per_request": results[-1]["redis_commands_per_request"],
                "worker_cpu_share": results[-1]["worker_cpu_share"],
                "errors": sum(r["errors"] for r in results),
            }
        )

    if ONLY:
        partial = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": table}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "partial.json").write_text(json.dumps(partial, indent=2) + "\n")
        print_rows(table)
        return 0
    ref = SessionRef.from_session_id(cookie)
    record = store.read(ref)
    memory = {
        "record": client.memory_usage(record_key(ref)),
        "user_index": client.memory_usage(user_index_key(ref.tag)),
        "sid_index": client.memory_usage(sid_index_key(ref.tag, record["sid"])),
    }
    user_1k = wrk(f"{bff_direct}/bff/user", session_headers, connections=4, threads=1)
    started = time.monotonic()
    fake_sessions(store, {**real_tokens, "expires_in": 7200}, BIG - 1000, "big")
    load_seconds = time.monotonic() - started
    used_memory = client.info("memory")["used_memory"]
    user_big = wrk(f"{bff_direct}/bff/user", session_headers, connections=4, threads=1)
    scale = {
        "sessions_small": 1000,
        "sessions_big": BIG,
        "p50_ms_small": user_1k["p50_ms"],
        "p50_ms_big": user_big["p50_ms"],
        "p99_ms_small": user_1k["p99_ms"],
        "p99_ms_big": user_big["p99_ms"],
        "load_seconds": round(load_seconds, 1),
        "redis_used_memory_mb": round(used_memory / 2**20),
    }
    client.flushdb(asynchronous=True)  # free the memory (in the background) before the back-channel figures
    backchannel = backchannel_costs(store, bff_direct, issuer, key, real_tokens)
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "note": "wrk, Redis, the IdP, the API and the BFF share the cores"},
        "settings": {"seconds": SECONDS, "rounds": ROUNDS, "wrk": "2 threads, 16 connections, reconnect every 50"},
        "gunicorn": "gunicorn.conf.py defaults: gthread, 2 workers x 8 threads",
        "rows": table,
        "bytes_per_session": memory,
        "scale": scale,
        "backchannel_logout_ms": backchannel,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, RESULTS / "latest.png")
    print_report(results)
    return 0


def backchannel_costs(store, bff_direct, issuer, key, tokens) -> dict[str, float]:
    costs = {}
    for count in (1, 10, 100):
        samples = []
        for attempt in range(5):
            sub = f"bc-{count}-{attempt}"
            fake_sessions(store, tokens, count, sub, same_user=True)
            token = forge.logout_token(key, issuer=issuer, sub=sub)
            started = time.perf_counter()
            response = requests.post(f"{bff_direct}/bff/backchannel-logout", data={"logout_token": token}, timeout=30)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
        costs[str(count)] = round(statistics.median(samples), 1)
    return costs


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    names = [r["row"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.barh(names, [r["rps"] for r in rows], color="#4d90fe")
    left.invert_yaxis()
    left.set_xlabel("requests per second (higher is better)")
    for y, r in enumerate(rows):
        left.text(r["rps"], y, f" {r['rps']}", va="center")
    positions = range(len(rows))
    right.barh([p - 0.2 for p in positions], [r["p50_ms"] for r in rows], height=0.4, label="p50", color="#34a853")
    right.barh([p + 0.2 for p in positions], [r["p99_ms"] for r in rows], height=0.4, label="p99", color="#ea4335")
    right.set_yticks(list(positions), names)
    right.invert_yaxis()
    right.set_xlabel("latency, ms (lower is better)")
    right.legend()
    fig.suptitle(f"make bench, {results['when']} ({results['machine']['cores']} cores shared by everything)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_report(results: dict) -> None:
    print_rows(results["rows"])
    print(f"\nbytes per session in Redis: {results['bytes_per_session']}")
    print(f"/bff/user at scale: {results['scale']}")
    print(f"back-channel logout, ms by sessions of the user: {results['backchannel_logout_ms']}")
    print(f"\nwritten: {RESULTS / 'latest.json'} and latest.png")


def print_rows(rows: list[dict]) -> None:
    print(
        f"\n{'row':<38}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'x naive':>9}{'redis/req':>11}"
        "  worker CPU µs/request  worker CPU share"
    )
    for r in rows:
        cpu = ", ".join(f"{server} {us}" for server, us in r["cpu_us_per_request"].items())
        print(
            f"{r['row']:<38}{r['rps']:>8}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['ratio_to_naive']:>9}"
            f"{r['redis_commands_per_request']:>11}  {cpu:<22} {r['worker_cpu_share']}"
        )


if __name__ == "__main__":
    sys.exit(main())
