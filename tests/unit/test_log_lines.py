"""JSON log lines stay whole whatever text a value holds."""

import io
import json
import logging

from app import logs


def test_a_lone_surrogate_from_an_idp_keeps_the_line_whole():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("test-log-lines")
    log.handlers[:] = [handler]
    log.propagate = False
    log.warning("the IdP refused the refresh (%s)", "invalid_grant\ud800")  # as json.loads gives it
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "the IdP refused the refresh (invalid_grant\ud800)"
