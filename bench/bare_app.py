"""Baseline for `make bench`: a bare Flask app answering JSON, and nothing else (no BFF code, no
logging or metrics middleware). Served by the BFF's own gunicorn settings."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def bare():
    return jsonify(status="ok")
