"""Where `/bff/user`'s microseconds go: the BFF's WSGI app called in-process against a real
redis-server, beside the separate naive baseline app, under cProfile. Prints a Markdown table.

    .venv/bin/python -m bench.profile_user [requests] [--top]

In-process figures leave out gunicorn's own per-request work (parsing, writing), which every row
of `make bench` pays alike; they show what the BFF adds on top of a hand-written session check.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

from dev import forge
from dev.stack import bff_env, free_port, start_redis

# Components, by the functions whose cumulative time is theirs (outermost first match wins).
COMPONENTS = [
    ("Flask-Session: open the session, its GETEX included", "open_session"),
    ("... of which the Redis round trip (redis-py's command)", "execute_command"),
    ("... of which the cookie's SHA-256 (the record's key)", "session_ref"),
    ("... of which msgpack decode of the record", "'decode' of 'msgspec.msgpack.Decoder'"),
    ("Flask-Session: save the session (read-only: `Vary` only)", "save_session"),
    ("the view (CSRF check, claims, JSON answer)", "user"),
    ("... of which the JSON answer (msgspec provider)", "response"),
    ("before hook: request id, declared body size", "begin_request"),
    ("after hook: security headers, metric, access line", "finish_request"),
    ("... of which the JSON access line (format, one write)", "write_access_line"),
    ("... of which the latency histogram", "observe"),
    ("... of which the security headers", "add_security_headers"),
]


def environ(path: str, cookie: str = "") -> dict:
    env = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "RAW_URI": path,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "HTTP_HOST": "localhost:8000",
        "HTTP_X_CSRF": "1",
        "REMOTE_ADDR": "127.0.0.1",
    }
    if cookie:
        env["HTTP_COOKIE"] = f"bff={cookie}"
    return env


def per_request_us(app, path: str, cookie: str, count: int) -> float:
    def start_response(status, headers, exc_info=None):
        return None

    started = time.process_time()  # this process's CPU: what gunicorn's workers would spend
    for _ in range(count):
        body = app(environ(path, cookie), start_response)
        b"".join(body)
        getattr(body, "close", lambda: None)()
    return (time.process_time() - started) / count * 1e6


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--top"]
    count = int(args[0]) if args else 5000
    work = Path(tempfile.mkdtemp(prefix="bff-profile-"))
    port = free_port()
    redis = start_redis(port, work)
    try:
        redis_url = f"redis://127.0.0.1:{port}/0"
        os.environ.update(bff_env("http://localhost:8000", "http://127.0.0.1:9/realms/none", redis_url))
        os.environ["BENCH_NAIVE_REDIS_URL"] = redis_url
        from app import create_app, logs
        from app.config import load_settings
        from bench import naive_app

        settings = load_settings(os.environ)
        log_file = open(work / "access.log", "w")  # noqa: SIM115 - the process's lifetime
        logs.configure(settings.log_level)
        import logging

        logging.getLogger().handlers[0].stream = log_file
        os.dup2(log_file.fileno(), 2)  # the access line's own write goes to fd 2: a file, as under gunicorn
        app = create_app(settings)
        store = app.extensions["bff"].store
        forged = forge.stored_session(store, "profiled", sid="profiled-sid")
        naive_app.client.set("bench:naive", os.urandom(1024).hex())

        naive, user = [], []
        for _ in range(3):  # alternated, best of three: the machine's other work comes and goes
            naive.append(per_request_us(naive_app.app.wsgi_app, "/", "", count))
            user.append(per_request_us(app.wsgi_app, "/bff/user", forged.session_id, count))
        naive_us, user_us = min(naive), min(user)
        profiler = cProfile.Profile()
        profiler.enable()
        per_request_us(app.wsgi_app, "/bff/user", forged.session_id, count)
        profiler.disable()
        stats = pstats.Stats(profiler)
        rows = []
        for label, name in COMPONENTS:
            cumulative = sum(v[3] for k, v in stats.stats.items() if k[2] == name or (" " in name and name in k[2]))
            rows.append((label, cumulative / count * 1e6))
        print(
            f"requests: {count} x 3; CPU per request in-process: naive app {naive_us:.0f} µs, "
            f"/bff/user {user_us:.0f} µs ({naive_us / user_us:.2f}x)\n"
        )
        print("| Where `/bff/user`'s time goes (cProfile, in-process) | µs per request |")
        print("|---|---|")
        for label, us in rows:
            print(f"| {label} | {us:.0f} |")
        print(f"| everything, under cProfile (which slows each call) | {stats.total_tt / count * 1e6:.0f} |")
        if "--top" in sys.argv:  # the functions themselves, for finding the next cut
            stats.sort_stats("tottime").print_stats(35)
        return 0
    finally:
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
