"""A headless stand-in for a person with a browser: follows redirects, fills in the IdP's forms.

Every response it receives from the BFF is recorded, so the token-leak test can search all of
them at the end of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

import requests

from dev.forms import is_login_form, parse_page


@dataclass
class Recorded:
    url: str
    status: int
    headers: str
    body: str


RECORDED: list[Recorded] = []


def set_cookies(response: requests.Response) -> dict[str, str]:
    """Each Set-Cookie header of one response, by cookie name, as sent (attributes included)."""
    return {line.split("=", 1)[0]: line for line in response.raw.headers.getlist("Set-Cookie")}


class Agent(requests.Session):
    def __init__(self, bff_url: str, user_agent: str = "pytest-agent", record: bool = True) -> None:
        super().__init__()
        self.bff_url = bff_url
        self.headers["User-Agent"] = user_agent
        if record:
            self.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args, **kwargs) -> None:
        if response.url.startswith(self.bff_url):
            headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            # A streamed body belongs to the test reading it; only its headers are recorded.
            body = "" if kwargs.get("stream") else response.text
            RECORDED.append(Recorded(response.url, response.status_code, headers, body))

    # The SPA's calls ----------------------------------------------------------------------------

    def user(self, csrf: bool = True) -> requests.Response:
        return self.get(f"{self.bff_url}/bff/user", headers={"X-CSRF": "1"} if csrf else {})

    def logout(self, csrf: bool = True) -> requests.Response:
        return self.post(f"{self.bff_url}/bff/logout", headers={"X-CSRF": "1"} if csrf else {})

    @property
    def session_cookie(self) -> str | None:
        return self.cookies.get("bff") or self.cookies.get("__Host-bff")  # over https: __Host-bff

    # A person at the IdP ------------------------------------------------------------------------

    def start_login(self, return_url: str = "/", **params: str) -> requests.Response:
        """GET /bff/login and follow redirects to wherever the IdP stops (form or back to us)."""
        return self.get(f"{self.bff_url}/bff/login", params={"returnUrl": return_url, **params})

    def authorize(self, username: str = "alice", return_url: str = "/", **params: str) -> str:
        """Sign in at the IdP and return the callback URL it redirects to, without following it."""
        response = self.get(
            f"{self.bff_url}/bff/login", params={"returnUrl": return_url, **params}, allow_redirects=False
        )
        assert response.status_code == 302, response.text
        location = response.headers["Location"]
        for _ in range(20):
            if location.startswith(f"{self.bff_url}/bff/callback"):
                return location
            response = self.get(location, allow_redirects=False)
            if response.status_code in (302, 303):
                location = urljoin(response.url, response.headers["Location"])
                continue
            assert response.status_code == 200, f"{response.status_code} at {response.url}"
            response = self._submit_idp_form(response, username)
            location = urljoin(response.url, response.headers["Location"])
        raise AssertionError("the IdP never redirected back to the BFF")

    def _submit_idp_form(self, page: requests.Response, username: str) -> requests.Response:
        forms, _ = parse_page(page.text)
        form = forms[0]
        data = dict(form.fields)
        if is_login_form(page.text):
            data.update(login=username, password="any password")  # noqa: S106 - the dev IdP takes any
        response = self.post(urljoin(page.url, form.action), data=data, allow_redirects=False)
        assert response.status_code in (302, 303), f"{response.status_code} at {response.url}"
        return response

    def login(self, username: str = "alice", return_url: str = "/") -> requests.Response:
        """The whole sign-in: IdP forms, callback, back on the return URL."""
        callback = self.authorize(username, return_url)
        response = self.get(callback)
        assert response.ok, (response.status_code, response.text)
        return response

    def follow_logout_url(self, logout_url: str) -> requests.Response:
        """Confirm the IdP's sign-out page (if it shows one) and land back on our post-logout page."""
        page = self.get(logout_url)
        forms, _ = parse_page(page.text)
        logout_form = next((f for f in forms if f.form_id == "op.logoutForm"), None)
        if logout_form is None:
            return page
        return self.post(urljoin(page.url, logout_form.action), data={**logout_form.fields, "logout": "yes"})

    def cancel_at_idp(self) -> str:
        """Press the IdP's Cancel link on its login page; return the callback URL it redirects to."""
        page = self.start_login()
        _, links = parse_page(page.text)
        response = self.get(urljoin(page.url, links["[ Cancel ]"]), allow_redirects=False)
        location = response.headers["Location"]
        while not location.startswith(f"{self.bff_url}/bff/callback"):
            response = self.get(urljoin(response.url, location), allow_redirects=False)
            location = response.headers["Location"]
        return location
