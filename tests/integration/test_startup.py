"""§4: a missing or invalid setting stops the process with one line naming the variable."""

from __future__ import annotations

import subprocess

import pytest

from dev.stack import ROOT, VENV_BIN, bff_env, free_port


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"BFF_OIDC_CLIENT_ID": None}, "BFF_OIDC_CLIENT_ID"),
        ({"BFF_OIDC_ISSUER": "not a url"}, "BFF_OIDC_ISSUER"),
        ({"BFF_SESSION_IDLE_TIMEOUT": "eight hours"}, "BFF_SESSION_IDLE_TIMEOUT"),
    ],
)
def test_gunicorn_refuses_to_start_with_one_line_naming_the_bad_variable(stack, change, variable):
    port = free_port()
    env = {**bff_env(f"http://localhost:{port}", stack.issuer, stack.redis_url), **change}
    env = {k: v for k, v in env.items() if v is not None}
    result = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "wsgi:app"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 1 and f"{variable}:" in lines[0]
    assert "Traceback" not in result.stderr
