"""The BFF plus two reference endpoints, served by the same gunicorn settings for `make bench`:

- `/bench/bare`: a JSON answer with no I/O (the framework's floor);
- `/bench/naive`: one Redis GET of a 2 KB value (the ceiling for any session check).
"""

import os

from flask import current_app, jsonify

from app import create_app, logs
from app.config import load_settings
from bench.keys import NAIVE_KEY

settings = load_settings(os.environ)
logs.configure(settings.log_level)  # as wsgi.py: production logging
app = create_app(settings)


@app.get("/bench/bare")
def bare():
    return jsonify(status="ok")


@app.get("/bench/naive")
def naive():
    value = current_app.extensions["bff"].redis.get(NAIVE_KEY)
    return jsonify(length=len(value or b""))
