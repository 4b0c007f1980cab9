"""The product's promise, seen in a real browser."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from dev.stack import free_port

# One process runs these (make test: --dist loadgroup), so that the TLS stack behind nginx and
# chromium start once per run rather than once per process.
pytestmark = pytest.mark.xdist_group("nginx-and-browser")


def sign_in_at_the_idp(page, steps, username: str) -> None:
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("input[name=login]")
    steps.shot(page, "idp-login-form")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    consent = page.locator("button[type=submit]")  # first sign-in of this user: consent
    if page.url.startswith("http://127.0.0.1") and consent.count():
        steps.shot(page, "idp-consent")
        consent.click()
    expect(page.locator("#signed-in")).to_be_visible()


def test_sign_in_call_the_api_sign_out_of_both_and_be_asked_for_credentials_again(stack, steps):
    page = steps.open(stack.bff_url + "/")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    steps.shot(page, "spa-signed-out")

    sign_in_at_the_idp(page, steps, "bianca")
    expect(page.locator("#user-name")).to_have_text("Bianca")
    expect(page.locator("#user-email")).to_have_text("bianca@example.com")
    expect(page.locator("#user-sub")).to_have_text("bianca")
    steps.shot(page, "spa-signed-in")

    page.get_by_role("button", name="Call API").click()
    expect(page.locator("#api-result")).to_contain_text("The API says you are bianca.")
    steps.shot(page, "api-answer")

    page.get_by_role("button", name="Log out").click()
    page.wait_for_selector("button[name=logout]")  # the IdP asks to confirm its own sign-out
    steps.shot(page, "idp-logout-confirmation")
    page.click("button[name=logout]")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    # Back through /bff/logged-out and its prompt=none probe: the IdP has no session any more.
    expect(page.locator("#signout-message")).to_have_text("You are signed out, here and at the identity provider.")
    assert page.url == stack.bff_url + "/"  # the outcome was read, then taken out of the address bar
    steps.shot(page, "spa-signed-out-complete")

    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("input[name=login]")  # asked for credentials: no silent sign-in
    steps.shot(page, "idp-asks-again")


def test_the_page_never_holds_a_token_or_the_session_cookie(stack, steps):
    page = steps.open(stack.bff_url + "/")
    sign_in_at_the_idp(page, steps, "carla")
    page.get_by_role("button", name="Call API").click()
    expect(page.locator("#api-result")).to_contain_text("carla")
    steps.shot(page, "signed-in")

    assert page.evaluate("document.cookie") == ""  # HttpOnly: the script cannot read it
    assert any(c["name"] == "bff" and c["httpOnly"] for c in steps.context.cookies())
    storage = page.evaluate("JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
    assert storage == "[[],[]]"
    html = page.content()
    tokens = stack.issued_tokens()
    fragments = {t for t in tokens} | {p for t in tokens for p in t.split(".")[1:] if len(p) >= 16}
    for place, text in [("storage", storage), ("html", html), *(("url", u) for u in steps.urls)]:
        assert not [f for f in fragments if f in text], f"a token in the page's {place}: {text[:120]}"
    assert len(steps.urls) > 10


@pytest.fixture
def other_origin_page():
    """A page on another origin (127.0.0.1:<port>) that tries to use the user's session."""
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    (folder / "index.html").write_text("<!doctype html><title>elsewhere</title><p>another site</p>")
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), partial(SimpleHTTPRequestHandler, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


ATTACK = """async ([url, method, headers]) => {
  try {
    const response = await fetch(url, {method, headers, credentials: "include"});
    return "answered " + response.status;
  } catch (error) {
    return "blocked: " + error.name;
  }
}"""


def test_another_origin_cannot_use_the_session(stack, steps, other_origin_page):
    page = steps.open(stack.bff_url + "/")
    sign_in_at_the_idp(page, steps, "dora")

    attacker = steps.open(other_origin_page)
    steps.shot(attacker, "other-origin")
    with_header = {"X-CSRF": "1"}
    for path, method in [("/bff/user", "GET"), ("/bff/logout", "POST"), ("/api/echo/x", "GET")]:
        # The custom header forces a CORS preflight, which the BFF does not allow: blocked.
        assert attacker.evaluate(ATTACK, [stack.bff_url + path, method, with_header]).startswith("blocked")
    # Without the header the request is "simple" and goes out, but is refused (no X-CSRF) and,
    # being cross-site, carries no SameSite=Lax cookie anyway.
    attacker.evaluate(ATTACK, [stack.bff_url + "/bff/logout", "POST", {}])
    page.reload()
    expect(page.locator("#user-sub")).to_have_text("dora")  # still signed in
    steps.shot(page, "still-signed-in")


def test_signing_out_in_one_tab_signs_out_the_other_on_its_next_call(stack, steps):
    first = steps.open(stack.bff_url + "/")
    sign_in_at_the_idp(first, steps, "erika")
    second = steps.open(stack.bff_url + "/")
    expect(second.locator("#user-sub")).to_have_text("erika")
    steps.shot(second, "second-tab-signed-in")

    first.evaluate("fetch('/bff/logout', {method: 'POST', headers: {'X-CSRF': '1'}})")
    second.get_by_role("button", name="Call API").click()
    expect(second.locator("#api-result")).to_have_text("Your session has ended; please log in again.")
    expect(second.get_by_role("button", name="Log in")).to_be_visible()
    steps.shot(second, "second-tab-signed-out")


def test_staying_signed_in_at_the_idp_is_shown_and_signing_out_again_completes(stack, steps):
    page = steps.open(stack.bff_url + "/")
    sign_in_at_the_idp(page, steps, "felix")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_selector("button[name=logout]")
    steps.shot(page, "idp-logout-confirmation")
    page.get_by_role("button", name="No, stay signed in").click()

    notice = page.locator("#signout-message")
    expect(notice).to_contain_text("the identity provider kept you signed in")
    again = page.get_by_role("button", name="Sign out at 127.0.0.1")
    expect(again).to_be_visible()
    assert page.url == stack.bff_url + "/"
    steps.shot(page, "spa-idp-session-alive")

    again.click()
    page.wait_for_selector("button[name=logout]")
    page.click("button[name=logout]")
    expect(notice).to_have_text("You are signed out, here and at the identity provider.")
    steps.shot(page, "spa-signed-out-complete-after-retry")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("input[name=login]")  # asked for credentials again
    steps.shot(page, "idp-asks-again")


STEAL_FROM_POPUP = """async () => {
  const response = await fetch('/bff/logout', {method: 'POST', headers: {'X-CSRF': '1'}});
  const {logout_url} = await response.json();
  const popup = window.open(logout_url);
  return await new Promise((resolve) => {
    const deadline = Date.now() + 3000;
    const timer = setInterval(() => {
      try {
        const form = popup.document.getElementById('logout');
        if (form) { clearInterval(timer); resolve(form.elements.id_token_hint.value); return; }
      } catch (error) { /* an opaque origin: not readable */ }
      if (Date.now() > deadline) { clearInterval(timer); resolve(null); }
    }, 0);
  });
}"""


def test_script_on_the_spa_origin_cannot_read_the_id_token_from_the_form_post_page(stack, steps, make_bff):
    """An XSS opens the one-time form_post page in a popup (a top-level navigation on its own
    origin, which Sec-Fetch-* checks let through): the page's sandbox keeps its DOM unreadable."""
    bff = make_bff(registered=True, BFF_LOGOUT_MODE="form_post")
    page = steps.open(bff.url + "/")
    sign_in_at_the_idp(page, steps, "gina")
    id_token = stack.latest_tokens()["id_token"]
    stolen = page.evaluate(STEAL_FROM_POPUP)
    assert stolen is None and id_token not in (stolen or "")
