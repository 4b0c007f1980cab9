"""Entry point for gunicorn (`gunicorn wsgi:app`) and the Flask CLI (`flask --app wsgi ...`).

A configuration problem stops the process with one line per mistake, each naming its variable,
not a traceback.
"""

import os
import sys

from app import create_app, logs
from app.config import ConfigError, load_settings

try:
    settings = load_settings(os.environ)
except ConfigError as error:
    for line in str(error).splitlines():
        print(f"bff: configuration error: {line}", file=sys.stderr)
    # 3 is gunicorn's "worker failed to boot": the arbiter stops instead of respawning forever.
    sys.exit(3)

logs.configure(settings.log_level)
app = create_app(settings)
