"""`make run`: the whole demo on this machine — Redis, the dev IdP, the sample API, the BFF.
`make run-tls` (BFF_TLS=1): the same behind nginx on https://localhost:TLS_PORT (8443), with
`flask nginx-config`'s configuration (offload mode) and a certificate authority made under
.run/tls/ for it.

Uses BFF_REDIS_URL when set; otherwise starts a redis-server of its own under .run/ (never the
system one). Ports: BFF_PORT (8000) and IDP_PORT (9000). Ctrl-C stops them all.

Each service runs in a session of its own, so a terminal's Ctrl-C reaches only this launcher, which
then stops each one in turn: one SIGTERM, then, if it is not gone within 10 s, SIGKILL to its whole
process group (dev/stack.py, `Service.stop`). gunicorn's workers never get the terminal's SIGINT and
their master's SIGQUIT in a row, a race that used to leave them deadlocked, holding the port.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import time

from dev.stack import ROOT, Service, bff_env, free_port, start_bff, start_echo, start_idp, start_nginx, start_redis
from dev.tls import local_nginx_site, make_certificates


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def main() -> int:
    bff_port = int(os.environ.get("BFF_PORT", "8000"))
    idp_port = int(os.environ.get("IDP_PORT", "9000"))
    tls_port = int(os.environ.get("TLS_PORT", "8443")) if os.environ.get("BFF_TLS") == "1" else None
    wanted = [("BFF_PORT", bff_port), ("IDP_PORT", idp_port)] + ([("TLS_PORT", tls_port)] if tls_port else [])
    for name, port in wanted:
        if not port_is_free(port):
            print(f"make run: port {port} is in use; choose another with {name}=...", file=sys.stderr)
            return 1
    workdir = ROOT / ".run"
    workdir.mkdir(exist_ok=True)
    bff_url = f"https://localhost:{tls_port}" if tls_port else f"http://localhost:{bff_port}"
    issuer = f"http://127.0.0.1:{idp_port}/realms/dev"

    def stop(*_):
        stopping()
        raise KeyboardInterrupt

    # Explicit handlers: a shell that starts us in the background would otherwise ignore SIGINT.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    services = []
    try:
        redis_url = os.environ.get("BFF_REDIS_URL")
        if not redis_url:
            redis_port = free_port()
            services.append(start_redis(redis_port, workdir))
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
        services.append(start_idp(idp_port, issuer, workdir, [bff_url]))
        echo_port = free_port()
        services.append(start_echo(echo_port, issuer, workdir))
        upstreams = json.dumps({"echo": f"http://127.0.0.1:{echo_port}"})
        env = bff_env(bff_url, issuer, redis_url, BFF_API_UPSTREAMS=upstreams)
        trust = ""
        if tls_port:
            env.update(BFF_AUTHZ_SECRET=secrets.token_urlsafe(32), BFF_TRUSTED_PROXIES="1")
        services.append(start_bff(bff_port, env, workdir / "bff.log"))
        if tls_port:
            certificates = make_certificates(workdir / "tls")
            site = local_nginx_site(env, bff_port, tls_port, certificates)
            services.append(start_nginx(tls_port, site, workdir))
            trust = (
                f"  Behind nginx (https, HTTP/2; /api offloaded). The certificate is signed by a CA made\n"
                f"  for this demo: trust {certificates.ca} in your browser (Settings > Privacy and\n"
                f"  security > Manage certificates > Authorities > Import), or open the URL and accept\n"
                f"  the warning. gunicorn itself: http://127.0.0.1:{bff_port}\n"
            )
        print(
            f"\n  BFF demo running:  {bff_url}\n"
            "  Sign in with any user name and any password (the development IdP accepts all).\n"
            f"{trust}"
            f"  IdP: {issuer}   Redis: {redis_url}   Sample API: /api/echo/ (port {echo_port})\n"
            f"  Logs: {workdir}/*.log\n"
            "  Press Ctrl-C to stop.\n",
            flush=True,
        )
        while all(s.process.poll() is None for s in services):
            time.sleep(0.5)
        stopped = next(s for s in services if s.process.poll() is not None)
        print(f"make run: {stopped.name} stopped unexpectedly; see {stopped.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stopping()
        Service.stop_all()  # also one whose start was under way, newest first
        print("make run: stopped.")


def stopping() -> None:
    """From here on, a second Ctrl-C (or SIGTERM) does not cut the stopping short; it only says so."""

    def still_stopping(*_):
        os.write(2, b"make run: stopping each service (at most 10 s each, then it is killed)\n")

    signal.signal(signal.SIGINT, still_stopping)
    signal.signal(signal.SIGTERM, still_stopping)


if __name__ == "__main__":
    sys.exit(main())
