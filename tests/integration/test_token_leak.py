"""I1 over the whole test run (support/leak_check.py): no token the IdP issued appears in any
response the BFF sent or in any line it logged; nor do the client secret or session cookie values
appear in its logs."""

from __future__ import annotations

import pytest
from support.leak_check import find_leaks


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

    findings = find_leaks(stack.issued_tokens(), stack.bff_log.parent)
    assert findings.tokens >= 6 and findings.responses >= 10 and findings.cookie_values
    assert "GET /bff/user" in stack.bff_log.read_text()  # the access log is there to be searched
    assert not findings.leaks, findings.leaks
