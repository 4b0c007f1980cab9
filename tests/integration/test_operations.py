"""Operating the BFF: readiness, metrics that add up across workers, JSON logs, Redis outages."""

from __future__ import annotations

import json
import re
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests

from dev.echo_api import release_path
from dev.stack import free_port, start_redis


def test_ready_when_redis_and_the_idp_answer(stack):
    response = requests.get(f"{stack.bff_url}/readyz", timeout=10)
    assert response.status_code == 200 and response.json() == {"status": "ready"}


def test_not_ready_naming_the_idp_when_its_metadata_cannot_be_loaded(make_bff):
    bff = make_bff(issuer=f"http://127.0.0.1:{free_port()}/realms/gone")
    response = requests.get(f"{bff.direct}/readyz", timeout=20)
    assert response.status_code == 503
    assert response.json()["error"] == "not_ready" and "IdP" in response.json()["error_description"]
    assert requests.get(f"{bff.direct}/healthz", timeout=5).status_code == 200


def test_every_request_gets_a_request_id_and_one_json_access_line(stack, signed_in):
    response = signed_in.get(f"{stack.bff_url}/bff/user", headers={"X-CSRF": "1", "X-Request-ID": "trace-42.a"})
    assert response.headers["X-Request-ID"] == "trace-42.a"
    generated = signed_in.get(f"{stack.bff_url}/bff/user", headers={"X-CSRF": "1", "X-Request-ID": "bad id <script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    lines = [json.loads(line) for line in stack.bff_log.read_text().splitlines() if line.startswith("{")]
    (access,) = [e for e in lines if e.get("request_id") == "trace-42.a" and e["logger"] == "bff.access"]
    assert {"timestamp", "level", "method", "path", "status", "duration_ms", "session", "sub"} <= set(access)
    assert (access["method"], access["path"], access["status"], access["sub"]) == ("GET", "/bff/user", 200, "alice")
    assert access["session"] and access["session"] not in signed_in.session_cookie.split(".")[1]
    assert all(line.startswith("{") for line in stack.bff_log.read_text().splitlines() if line.strip())


@pytest.fixture
def metrics_stack(stack, workdir, make_bff):
    """A BFF of its own (2 workers, fresh metrics folder) so its counters start at zero."""
    metrics_dir = workdir / f"metrics-{free_port()}"
    bff = make_bff(
        workers=2,
        BFF_API_UPSTREAMS=json.dumps({"echo": stack.echo_url}),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        BFF_WORKER_CLASS="sync",  # accepts only when idle: two concurrent calls need both workers
        BFF_THREADS="1",
    )
    return bff.direct, metrics_dir


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_add_up_across_two_workers(stack, make_agent, metrics_stack):
    metrics_stack, metrics_dir = metrics_stack
    # Sessions are shared through Redis: sign in at the main BFF, then use the metrics BFF.
    a = make_agent()
    a.login("metered")
    make_agent().login("stays-signed-in")  # so the gauge has a live session to count
    cookie = {"bff": a.session_cookie}
    headers = {"X-CSRF": "1"}
    slow = f"{metrics_stack}/api/echo/slow?seconds=0.5"
    with ThreadPoolExecutor(2) as pool:  # two at once: each of the two workers takes one
        calls = [pool.submit(requests.get, slow, headers=headers, cookies=cookie, timeout=10) for _ in range(2)]
        assert [c.result().status_code for c in calls] == [200, 200]
    with requests.Session() as http:
        for _ in range(6):
            assert http.get(f"{metrics_stack}/api/echo/x", headers=headers, cookies=cookie).status_code == 200
        for _ in range(3):
            assert http.get(f"{metrics_stack}/api/echo/status/404", headers=headers, cookies=cookie).status_code == 404
        assert http.get(f"{metrics_stack}/api/nowhere/x", headers=headers, cookies=cookie).status_code == 404
        for _ in range(4):
            assert http.get(f"{metrics_stack}/bff/callback?state=nope", timeout=10).status_code == 400
        for _ in range(5):
            assert http.get(f"{metrics_stack}/bff/user", headers=headers, cookies=cookie).status_code == 200
        assert http.post(f"{metrics_stack}/bff/logout", headers=headers, cookies=cookie).status_code == 200
        assert http.post(f"{metrics_stack}/bff/backchannel-logout", data={"logout_token": "x"}).status_code == 400
        # Label values an attacker picks: error codes in the callback URL, made-up methods.
        for i in range(30):
            code = "made_up_error_" + "abcdefghijklmnopqrstuvwxyz"[i % 26] * (i + 1)
            assert http.get(f"{metrics_stack}/bff/callback?error={code}", timeout=10).status_code == 400
        for i in range(10):
            method = "ZZ" + "ABCDEFGHIJ"[i] * 4
            assert http.request(method, f"{metrics_stack}/bff/user", timeout=10).status_code == 405
        text = http.get(f"{metrics_stack}/metrics").text

    assert sample(text, "bff_proxy_requests_total", upstream="echo", status="200") == 8
    assert sample(text, "bff_proxy_requests_total", upstream="echo", status="404") == 3
    assert sample(text, "bff_proxy_requests_total", upstream="unknown", status="404") == 1
    assert sample(text, "bff_logins_total", result="invalid_state") == 4
    assert sample(text, "bff_logouts_total") == 1
    assert sample(text, "bff_backchannel_logouts_total", result="invalid_request") == 1
    assert sample(text, "bff_request_duration_seconds_count", route="/bff/user", method="GET", status="200") == 5
    assert sample(text, "bff_sessions_active") >= 1
    assert sample(text, "bff_logins_total", result="other") == 30
    assert sample(text, "bff_request_duration_seconds_count", route="unmatched", method="OTHER", status="405") == 10
    assert "made_up_error" not in text and "ZZAAAA" not in text
    # Files of three processes: the master (which imported the app) and both workers, whose
    # counts the figures above add up.
    processes = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
    assert len(processes) == 3


@pytest.fixture
def outage_stack(workdir, make_bff):
    """Redis of its own (saved on shutdown, so sessions survive a restart) and a BFF using it."""
    redis_port = free_port()
    redis_dir = workdir / f"redis-{redis_port}"
    redis_dir.mkdir()
    state = {"redis": start_redis(redis_port, redis_dir)}
    try:
        bff = make_bff(workers=2, redis_url=f"redis://127.0.0.1:{redis_port}/0")
        yield state, redis_port, redis_dir, bff.direct
    finally:
        state["redis"].stop()


ENDPOINTS = [
    ("GET", "/bff/user"),
    ("POST", "/bff/logout"),
    ("GET", "/bff/login"),
    ("GET", "/bff/callback?state=x&code=y"),
    ("POST", "/bff/backchannel-logout"),
    ("GET", "/api/echo/x"),
]


def test_redis_down_every_endpoint_answers_503_and_recovers_without_restart(stack, make_agent, outage_stack):
    state, redis_port, redis_dir, bff = outage_stack
    # Copy a real session from the main stack into this Redis: sign in through the main BFF...
    a = make_agent()
    a.login("outage")
    cookie = a.session_cookie
    client = redis.Redis(port=redis_port)
    for key in stack.redis.scan_iter(match="bff:*"):
        if stack.redis.type(key) == b"string" and key.startswith(b"bff:{"):
            client.restore(key, 0, stack.redis.dump(key), replace=True)
    headers = {"X-CSRF": "1", "Cookie": f"bff={cookie}"}
    assert requests.get(f"{bff}/bff/user", headers=headers, timeout=10).status_code == 200

    client.shutdown(save=True)  # Redis goes away (its data saved to disk)
    state["redis"].process.wait(10)
    for method, path in ENDPOINTS:
        response = requests.request(method, f"{bff}{path}", headers=headers, data={"logout_token": "x"}, timeout=15)
        assert response.status_code == 503, (path, response.status_code, response.text)
        assert response.json()["error"] == "session_store_unavailable"
    assert requests.get(f"{bff}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{bff}/readyz", timeout=15)
    assert ready.status_code == 503 and "Redis" in ready.json()["error_description"]
    assert requests.get(f"{bff}/metrics", timeout=15).status_code == 200

    state["redis"] = start_redis(redis_port, redis_dir)  # back, with the saved data
    assert requests.get(f"{bff}/bff/user", headers=headers, timeout=10).json()["sub"] == "outage"
    assert requests.get(f"{bff}/readyz", timeout=10).status_code == 200


def test_a_frozen_redis_is_bounded_by_the_timeout(stack, outage_stack):
    state, _, _, bff = outage_stack
    state["redis"].process.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    try:
        response = requests.get(
            f"{bff}/bff/user", headers={"X-CSRF": "1", "Cookie": "bff=" + "a" * 12 + "." + "b" * 43}, timeout=20
        )
        assert response.status_code == 503 and response.json()["error"] == "session_store_unavailable"
    finally:
        state["redis"].process.send_signal(signal.SIGCONT)


def test_sigterm_lets_requests_in_flight_finish(stack, make_agent, make_bff):
    """Graceful shutdown: a deploy's SIGTERM does not cut off an API call under way."""
    bff = make_bff(BFF_API_UPSTREAMS=json.dumps({"echo": stack.echo_url}), BFF_GRACEFUL_TIMEOUT="30")
    name = secrets.token_hex(8)
    release = Path(release_path(name))
    try:
        a = make_agent()
        a.login("draining")
        headers = {"X-CSRF": "1", "Cookie": f"bff={a.session_cookie}"}
        with requests.get(f"{bff.direct}/api/echo/drip/{name}", headers=headers, stream=True, timeout=20) as r:
            assert r.raw.read(len(b"first chunk;")) == b"first chunk;"  # the call is under way
            bff.service.process.send_signal(signal.SIGTERM)
            release.touch()
            assert r.raw.read() == b"second chunk"
        assert bff.service.process.wait(20) == 0
    finally:
        release.unlink(missing_ok=True)


def test_with_redis_down_the_answer_still_carries_its_request_id_and_one_access_line(make_bff):
    """Opening the session fails before any before-request hook runs: the request's id and start
    time are set before that, so the 503 echoes the id and the access line is written with it."""
    bff = make_bff(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    cookie = "A" * 12 + "." + "B" * 43  # shaped like a session id: the BFF must ask Redis
    headers = {"X-CSRF": "1", "X-Request-ID": "outage-trace-1", "Cookie": f"bff={cookie}"}
    response = requests.get(f"{bff.direct}/bff/user", headers=headers, timeout=15)
    assert response.status_code == 503 and response.headers["X-Request-ID"] == "outage-trace-1"
    lines = [json.loads(line) for line in bff.service.log().splitlines() if line.startswith("{")]
    mine = [e for e in lines if e.get("request_id") == "outage-trace-1"]
    assert [e["logger"] for e in mine].count("bff.access") == 1
    assert [e["status"] for e in mine if e["logger"] == "bff.access"] == [503]
    assert not [e for e in lines if "finalizing failed" in e["message"]]
