"""I1 over the whole test run: no token the IdP issued appears in any response the BFF sent or
in any line it logged; nor do the client secret or session cookie values appear in its logs."""

from __future__ import annotations

import re

import pytest

from dev.agent import RECORDED
from dev.stack import BASIC_AUTH, CLIENT_SECRET

CONTINUE = "/bff/logout/continue?"
AUTHZ = "/bff/authz"


def _fragments(token: str) -> list[str]:
    """The token, and for a JWT its payload and signature too (its header is common to many)."""
    parts = token.split(".")
    return [token] + [p for p in parts[1:] if len(p) >= 16] if len(parts) == 3 else [token]


@pytest.mark.run_last
def test_no_token_reaches_a_response_or_a_log_line_in_the_whole_run(stack, make_agent):
    # Make the run's traffic meaningful even when this test runs alone.
    a = make_agent()
    a.login("zoe")
    a.user()
    assert a.get(f"{stack.bff_url}/api/echo/x", headers={"X-CSRF": "1"}).status_code == 200
    a.get(f"{stack.bff_url}/")
    a.get(a.authorize("zoe"))
    a.user(csrf=False)
    a.follow_logout_url(a.logout().json()["logout_url"])

    tokens = stack.issued_tokens()
    assert len(tokens) >= 6
    fragments = {f for token in tokens for f in _fragments(token)}
    # The form_post logout page carries the id token in its body, by design: its form POSTs it to the
    # IdP, so that it appears in no URL. Its URL and headers are searched like every other.
    # /bff/authz's 204 hands nginx the Authorization value, by design, and answers only a caller
    # holding BFF_AUTHZ_SECRET (never a browser: test_authz.py, test_nginx.py); its refusals are
    # searched like every other response.
    nginx_answers = [r for r in RECORDED if AUTHZ in r.url and r.status == 204]
    assert all("X-BFF-Authorization" in r.headers for r in nginx_answers)
    recorded = [r for r in RECORDED if r not in nginx_answers]
    responses = [f"{r.url}\n{r.headers}\n{'' if CONTINUE in r.url else r.body}" for r in recorded]
    assert len(responses) >= 10
    for text in responses:
        leaked = [f for f in fragments if f in text]
        assert not leaked, f"a token reached a response: {text[:200]}"

    logs = "".join(path.read_text(errors="replace") for path in stack.bff_log.parent.glob("bff*.log"))
    assert "GET /bff/user" in logs  # the access log is there to be searched
    assert not [f for f in fragments if f in logs], "a token reached a log line"
    assert "code=" not in logs and "state=" not in logs, "a sign-in code or state reached a log line"
    assert CLIENT_SECRET not in logs and BASIC_AUTH[1] not in logs
    cookie_values = {m.group(1) for r in RECORDED for m in re.finditer(r"bff=([A-Za-z0-9_.-]{20,})", r.headers)}
    assert cookie_values
    assert not [c for c in cookie_values if c in logs], "a session cookie value reached a log line"
