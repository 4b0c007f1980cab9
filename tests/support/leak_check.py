"""I1 over a whole run: no token the IdP issued appears in any response the BFF sent or in any
line it logged; nor do the client secret or session cookie values appear in its logs.

Run twice: by test_token_leak.py (after every other test, with traffic of its own), and when the
stack stops, so that with the suite spread over processes (pytest-xdist) each process's whole
traffic is checked once all of its tests are done, whichever process ran the test."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dev.agent import RECORDED
from dev.stack import BASIC_AUTH, CLIENT_SECRET

CONTINUE = "/bff/logout/continue?"
AUTHZ = "/bff/authz"


@dataclass
class Findings:
    tokens: int = 0  # issued by the IdP in this process's run
    responses: int = 0  # searched
    log_bytes: int = 0
    cookie_values: int = 0
    leaks: list[str] = field(default_factory=list)


def _fragments(token: str) -> list[str]:
    """The token, and for a JWT its payload and signature too (its header is common to many)."""
    parts = token.split(".")
    return [token] + [p for p in parts[1:] if len(p) >= 16] if len(parts) == 3 else [token]


def find_leaks(tokens: set[str], log_folder: Path) -> Findings:
    findings = Findings(tokens=len(tokens))
    fragments = {f for token in tokens for f in _fragments(token)}
    # The form_post logout page carries the id token in its body, by design: its form POSTs it to the
    # IdP, so that it appears in no URL. Its URL and headers are searched like every other.
    # /bff/authz's 204 hands nginx the Authorization value, by design, and answers only a caller
    # holding BFF_AUTHZ_SECRET (never a browser: test_authz.py, test_nginx.py); its refusals, and
    # its 204s without a token (an upstream whose policy sends none), are searched like every other.
    nginx_answers = [r for r in RECORDED if AUTHZ in r.url and r.status == 204 and "X-BFF-Authorization" in r.headers]
    recorded = [r for r in RECORDED if r not in nginx_answers]
    findings.responses = len(recorded)
    for r in recorded:
        text = f"{r.url}\n{r.headers}\n{'' if CONTINUE in r.url else r.body}"
        if any(f in text for f in fragments):
            findings.leaks.append(f"a token reached a response: {text[:200]}")

    logs = "".join(path.read_text(errors="replace") for path in log_folder.glob("bff*.log"))
    findings.log_bytes = len(logs)
    if any(f in logs for f in fragments):
        findings.leaks.append("a token reached a log line")
    if "code=" in logs or "state=" in logs:
        findings.leaks.append("a sign-in code or state reached a log line")
    if CLIENT_SECRET in logs or BASIC_AUTH[1] in logs:
        findings.leaks.append("the client secret reached a log line")
    cookie_values = {m.group(1) for r in RECORDED for m in re.finditer(r"bff=([A-Za-z0-9_.-]{20,})", r.headers)}
    findings.cookie_values = len(cookie_values)
    if any(c in logs for c in cookie_values):
        findings.leaks.append("a session cookie value reached a log line")
    return findings
