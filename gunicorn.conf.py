"""gunicorn settings; every value can be overridden on the command line or with GUNICORN_CMD_ARGS."""

import os

bind = os.environ.get("BFF_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("BFF_WORKERS", "2"))
# Load the app once in the master: a configuration error stops everything with one line,
# and workers fork ready to serve.
preload_app = True
# The access log names the path only: query strings can carry authorization codes.
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
