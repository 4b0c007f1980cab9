"""The msgspec-backed JSON provider answers what Flask's own would (same JSON, keys sorted)."""

import json
from datetime import UTC, datetime

from flask import Flask, jsonify
from markupsafe import Markup

from app import json_responses


def make_app() -> Flask:
    app = Flask(__name__)
    json_responses.init_app(app)
    return app


def test_jsonify_gives_the_same_json_as_flasks_provider_with_sorted_keys():
    body = {"sub": "zoë", "claims": {"name": "Zoë 🚀", "b": [1, 2.5, None, True]}, "a": {"expires_at": 1}}
    with make_app().app_context():
        response = jsonify(body)
    assert response.mimetype == "application/json"
    assert json.loads(response.get_data()) == body
    assert list(json.loads(response.get_data())) == ["a", "claims", "sub"]
    assert response.get_data().endswith(b"\n")


def test_dates_are_iso_8601_and_other_types_json_lacks_go_through_flasks_fallback():
    with make_app().app_context():
        response = jsonify(when=datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC), html=Markup("<b>x</b>"))
    assert json.loads(response.get_data()) == {"when": "2026-12-02T01:02:03Z", "html": "<b>x</b>"}


def test_debug_mode_keeps_flasks_indented_output():
    app = make_app()
    app.debug = True
    with app.app_context():
        response = jsonify(a=1)
    assert response.get_data() == b'{\n  "a": 1\n}\n'
