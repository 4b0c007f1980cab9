"""Baseline for `make bench`: a bare Flask app doing one redis-py GET of a 2 KB value per request,
the ceiling for any session check (no BFF code, no logging or metrics middleware). Served by the
BFF's own gunicorn settings; the Redis URL comes from BENCH_NAIVE_REDIS_URL."""

import os

import redis
from flask import Flask, jsonify

app = Flask(__name__)
client = redis.Redis.from_url(os.environ["BENCH_NAIVE_REDIS_URL"])
KEY = "bench:naive"  # bench/keys.py's NAIVE_KEY, written by bench/run.py


@app.get("/")
def naive():
    value = client.get(KEY)
    return jsonify(length=len(value or b""))
