"""gunicorn settings for the BFF. Every value can be set through the environment (BFF_*) or on
the command line. Figures behind the defaults: README, "Operating it"."""

import os
import shutil
import tempfile

from prometheus_client import multiprocess

bind = os.environ.get("BFF_BIND", "127.0.0.1:8000")
# I/O-bound work (Redis, the IdP, upstream APIs): threads wait cheaply while a request is out.
worker_class = os.environ.get("BFF_WORKER_CLASS", "gthread")
workers = int(os.environ.get("BFF_WORKERS", "2"))
threads = int(os.environ.get("BFF_THREADS", "8"))
# A worker that stops heart-beating this long is replaced (gthread beats between requests, so a
# slow upstream call does not trip it); SIGTERM lets requests in flight finish for this long.
timeout = int(os.environ.get("BFF_WORKER_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("BFF_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("BFF_KEEPALIVE", "5"))
# Behind a reverse proxy, list its addresses so X-Forwarded-* are believed (see BFF_PROXY_FIX).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Load the app once in the master: a configuration error stops everything with one line, and
# workers fork ready to serve.
preload_app = True
# The app writes one JSON access line per request (app/logs.py); gunicorn's would duplicate it.
accesslog = None
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        # Off: the app logs each request without its query string, which can carry sign-in codes.
        "gunicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
    },
}

# Metrics add up across workers through files in one folder, emptied when the server starts
# (this file is read once, before the app and its metrics are imported).
metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bff-metrics-"))
shutil.rmtree(metrics_dir, ignore_errors=True)
os.makedirs(metrics_dir, exist_ok=True)


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
