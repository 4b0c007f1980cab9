"""§8: no query string reaches a log line, gunicorn's own lines about malformed requests included."""

from __future__ import annotations

import json
import secrets
import socket
import time
from urllib.parse import urlsplit

import pytest


def send_raw(bff_url: str, request: bytes) -> bytes:
    """One request exactly as given, on its own connection; the answer's status code."""
    with socket.create_connection(("127.0.0.1", urlsplit(bff_url).port), timeout=10) as sock:
        sock.sendall(request)
        return sock.recv(1024).split(b" ", 2)[1]


@pytest.mark.parametrize(
    ("request_line", "quoted"),
    [
        ("GET /bff/callback?code={code}\x01&state={state} HTTP/1.1", True),  # a control character
        ("GET /bff/callback?code={code}'&state={state}\x7f HTTP/1.1", True),  # a quote: repr() uses "…"
        ("GET /bff/callback?code={code}&state={state}", True),  # no HTTP version
        ("GET /bff/callback?code={code}&state={state} HTTP/1.1 extra", False),  # gunicorn quotes the version
        ("GET /bff/callback?code={code}&state={state}" + "A" * 9000 + " HTTP/1.1", False),  # over the limit
    ],
)
def test_malformed_request_line_is_logged_without_its_query(stack, request_line, quoted):
    code, state = "SECRET" + secrets.token_hex(8), "STATE" + secrets.token_hex(8)
    lines_before = len(stack.bff_log.read_text().splitlines())
    line = request_line.format(code=code, state=state)
    assert send_raw(stack.bff_url, f"{line}\r\nHost: localhost\r\n\r\n".encode("latin-1")) in (b"400", b"414")

    deadline = time.monotonic() + 5
    while not (refused := [e for e in new_entries(stack.bff_log, lines_before) if "Invalid request" in e["message"]]):
        assert time.monotonic() < deadline, "gunicorn did not log the malformed request"
        time.sleep(0.05)
    (entry,) = refused
    assert entry["logger"] == "gunicorn.error"
    if quoted:  # the line is there, so this test would see a query that got through
        assert "request line: 'GET /bff/callback?[redacted]" in entry["message"].replace('"', "'")
    log = stack.bff_log.read_text()
    assert code not in log and state not in log


def new_entries(log_path, skip: int) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines()[skip:] if line.startswith("{")]
