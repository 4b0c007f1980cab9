"""Entry point for gunicorn (`gunicorn wsgi:app`) and the Flask CLI (`flask --app wsgi ...`).

A configuration problem stops the process with one line naming the variable, not a traceback.
"""

import logging
import sys

from app import create_app
from app.config import ConfigError

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

try:
    app = create_app()
except ConfigError as error:
    print(f"bff: configuration error: {error}", file=sys.stderr)
    # 3 is gunicorn's "worker failed to boot": the arbiter stops instead of respawning forever.
    sys.exit(3)
