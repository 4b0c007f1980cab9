"""Just enough HTML reading to fill in the IdP's login, consent and logout forms like a person."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Form:
    action: str
    form_id: str | None
    fields: dict[str, str] = field(default_factory=dict)
    field_names: list[str] = field(default_factory=list)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.links: dict[str, str] = {}
        self._form: Form | None = None
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = Form(a.get("action", ""), a.get("id"))
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            self._form.field_names.append(a["name"])
            if a.get("type") in ("hidden", None, "text") and "value" in a:
                self._form.fields[a["name"]] = a["value"]
        elif tag == "a":
            self._href = a.get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links[data.strip()] = self._href

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "a":
            self._href = None


def parse_page(html: str) -> tuple[list[Form], dict[str, str]]:
    parser = _PageParser()
    parser.feed(html)
    return parser.forms, parser.links


def is_login_form(html: str) -> bool:
    """The IdP asks for credentials: a form with a login name and a password field."""
    forms, _ = parse_page(html)
    return any({"login", "password"} <= set(f.field_names) for f in forms)
