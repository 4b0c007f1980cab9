"""An upstream API that records every request exactly as it arrived (raw request target, headers,
body), so proxy tests can assert what reached it, and what did not reach it at all.

Its answers are chosen by the path's last segment: `hostile-headers` sends headers that would act
on the SPA's whole origin, `no-cache-control` sends none, `public` sends `Cache-Control: public`;
anything else gets a small JSON body. A test may register its own answer for a path (without
query) in `answers`: `(status, headers, body)`, or a function that writes raw bytes (or nothing).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


HOSTILE_HEADERS = [
    ("Set-Cookie", "bff=stolen; Path=/"),
    ("SET-COOKIE2", "bff=stolen"),
    ("X-Accel-Redirect", "/_internal/bff-authz"),
    ("X-Sendfile", "/etc/passwd"),
    ("NEL", '{"report_to":"x","max_age":31536000,"success_fraction":1.0}'),
    ("Report-To", '{"group":"x","max_age":31536000,"endpoints":[{"url":"https://evil.example/r"}]}'),
    ("Reporting-Endpoints", 'x="https://evil.example/r"'),
    ("CDN-Cache-Control", "public, max-age=3600"),
    ("Surrogate-Control", "max-age=3600"),
    ("Content-Security-Policy", "script-src * 'unsafe-inline'"),
    ("WWW-Authenticate", 'Basic realm="Please re-enter your password"'),
    ("Refresh", "0; url=https://evil.example/"),
    ("X-Total-Count", "7"),
    ("Clear-Site-Data", '"cookies"'),
    ("Strict-Transport-Security", "max-age=0"),
    ("Access-Control-Allow-Origin", "https://evil.example"),
    ("Access-Control-Allow-Credentials", "true"),
    ("Alt-Svc", 'h2="evil.example:443"'),
    ("Cache-Control", "public, max-age=600, s-maxage=600"),
    ("X-Kept", "yes"),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _handle(self) -> None:
        # Recorded as soon as the headers arrive: a request whose body never completes still counts.
        seen = Seen(self.command, self.path, list(self.headers.items()), b"")
        self.server.capture.seen.append(seen)
        seen.body = body = self._read_body()
        answer = self.server.capture.answers.get(self.path.split("?", 1)[0])
        if callable(answer):
            answer(self)
            return
        if answer is not None:
            self._send(*answer)
            return
        last = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        headers = [("Content-Type", "application/json")]
        if last == "hostile-headers":
            headers += HOSTILE_HEADERS
        elif last == "public":
            headers.append(("Cache-Control", "public, max-age=60"))
        elif last != "no-cache-control":
            headers.append(("Cache-Control", "no-cache"))
        self._send(200, headers, json.dumps({"target": self.path, "body_length": len(body)}).encode())

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    capture: CaptureUpstream


class CaptureUpstream:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.answers: dict[str, Any] = {}
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.capture = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def clear(self) -> None:
        self.seen.clear()
        self.answers.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
