"""The demo SPA behind nginx over https (DESIGN §9), in chromium: the `__Host-bff` cookie, HTTP/2,
the API through nginx's offload, and sign-out of both. Chromium trusts this run's certificate only
(its public key, `--ignore-certificate-errors-spki-list`), nothing else."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import expect
from test_spa import sign_in_at_the_idp

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

# One process runs these (make test: --dist loadgroup), so that the TLS stack behind nginx and
# chromium start once per run rather than once per process.
pytestmark = pytest.mark.xdist_group("nginx-and-browser")


def spki_hash(certificate_chain: bytes) -> str:
    leaf = x509.load_pem_x509_certificates(certificate_chain)[0]
    public_key = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(public_key).digest()).decode()


@pytest.fixture
def https_steps(browser, steps, tls):
    """`steps`, in a chromium of its own that accepts this run's nginx certificate and no other."""
    pin = spki_hash(tls.certificates.certificate.read_bytes())
    pinned = browser.browser_type.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pin}"]
    )
    shared_context = steps.context
    steps.context = pinned.new_context()
    yield steps
    steps.context.close()
    steps.context = shared_context  # closed by `steps`
    pinned.close()


def test_sign_in_call_the_api_through_nginx_and_sign_out_over_https(tls, https_steps):
    steps = https_steps
    page = steps.open(tls.url + "/")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
    steps.shot(page, "spa-over-https")

    sign_in_at_the_idp(page, steps, "hana")
    expect(page.locator("#user-sub")).to_have_text("hana")
    (cookie,) = [c for c in steps.context.cookies() if c["name"].endswith("bff")]
    assert (cookie["name"], cookie["secure"], cookie["httpOnly"], cookie["path"]) == ("__Host-bff", True, True, "/")
    steps.shot(page, "signed-in-over-https")

    page.get_by_role("button", name="Call API").click()
    expect(page.locator("#api-result")).to_contain_text("The API says you are hana.")
    steps.shot(page, "api-through-nginx")

    page.get_by_role("button", name="Log out").click()
    page.wait_for_selector("button[name=logout]")
    page.click("button[name=logout]")
    expect(page.locator("#signout-message")).to_have_text("You are signed out, here and at the identity provider.")
    steps.shot(page, "signed-out-over-https")
    assert not [c for c in steps.context.cookies() if c["name"] == "__Host-bff"]
