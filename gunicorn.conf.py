"""gunicorn settings for the BFF, read from the environment (BFF_*, checked by
app.server_settings.load_server_settings) and overridden by the command line. Figures behind the defaults:
README, "Operating it"."""

import atexit
import os
import shutil
import sys
import tempfile

# Metrics add up across workers through files in one folder. prometheus_client decides when it is
# first imported whether to write them, so the folder is set up before anything imports it (the
# app package, imported below, does). A folder given in PROMETHEUS_MULTIPROC_DIR is emptied, since
# an earlier server's counts would add up with ours; otherwise one is created here and removed when
# this process exits. _BFF_CREATED_METRICS_DIR remembers which, for when this file is read again
# (SIGHUP) and when the server stops.
CREATED = "_BFF_CREATED_METRICS_DIR"


def _set_up_metrics_dir() -> None:
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given and given == os.environ.get(CREATED):
        return  # ours, and this file is being read again: keep the counts
    if given:
        shutil.rmtree(given, ignore_errors=True)
        os.makedirs(given, exist_ok=True)
        return
    created = tempfile.mkdtemp(prefix="bff-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[CREATED] = created
    # on_exit runs only once the server has started; this also covers a start that fails. Workers
    # inherit the registration, hence the check that this is still the process that created it.
    master = os.getpid()
    atexit.register(lambda: os.getpid() == master and _remove_created_metrics_dir())


def _remove_created_metrics_dir() -> None:
    created = os.environ.get(CREATED)
    if created:
        shutil.rmtree(created, ignore_errors=True)


def _stop(message: str) -> None:
    print(f"bff: configuration error: {message}", file=sys.stderr)
    sys.exit(3)  # as wsgi.py; exiting here, gunicorn prints no traceback


try:
    _set_up_metrics_dir()
except OSError as error:
    _stop(f"PROMETHEUS_MULTIPROC_DIR: cannot create a folder for the metrics: {error}")

from app.server_settings import ConfigError, load_server_settings  # noqa: E402 - after the metrics folder is set

try:
    server = load_server_settings(os.environ)
except ConfigError as error:
    _stop(str(error))

bind = server.bind
# I/O-bound work (Redis, the IdP, upstream APIs): threads wait cheaply while a request is out.
worker_class = server.worker_class
workers = server.workers
threads = server.threads
# A worker that stops heart-beating this long is replaced (gthread beats between requests, so a
# slow upstream call does not trip it); SIGTERM lets requests in flight finish for this long.
timeout = server.worker_timeout
graceful_timeout = server.graceful_timeout
keepalive = server.keepalive
# Behind a reverse proxy, list its addresses so X-Forwarded-* are believed (see BFF_TRUSTED_PROXIES).
forwarded_allow_ips = server.forwarded_allow_ips
# Load the app once in the master: a configuration error stops everything with one line, and
# workers fork ready to serve.
preload_app = True
# gunicorn's control socket (runtime worker count, reload, shutdown) is off: by default every
# instance on a host shares one path under $HOME, and the BFF needs no remote control.
control_socket_disable = True
# One header line (the Cookie header, mostly) may be 16 KB, not gunicorn's 8 KB: three sign-in
# attempt cookies of at most ~1.8 KB each plus the session cookie fit the default, but attempts
# started in parallel (several tabs at once) may briefly hold more before the next one prunes
# them, and a browser whose Cookie header is refused cannot reach /bff/login to prune anything.
limit_request_field_size = 16384
# ... and fewer lines than gunicorn's default 100, so a request's headers stay bounded (50 x 16 KB).
limit_request_fields = 50
# The app writes one JSON access line per request (app/logs.py); gunicorn's would duplicate it,
# and this logger class skips even the building of gunicorn's (app/server_settings.py).
accesslog = None
logger_class = "app.server_settings.AppAccessLinesLogger"
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


def child_exit(server, worker):
    from prometheus_client import multiprocess  # here: importing it above would fix its mode too early

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    _remove_created_metrics_dir()
