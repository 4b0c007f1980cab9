"""A missing or invalid setting stops the process with one line naming the variable."""

from __future__ import annotations

import json
import subprocess

import pytest

from dev.stack import ROOT, VENV_BIN, bff_env, free_port

# Nothing listens there: the process must stop at configuration time, before connecting anywhere.
UNUSED_ISSUER = "http://127.0.0.1:9/realms/none"
UNUSED_REDIS = "redis://127.0.0.1:9/0"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        # One row per kind of failure; every variable's rules are in tests/unit/test_config.py.
        # Read by the app (app/config.py's load_settings, in wsgi.py)
        ("BFF_OIDC_CLIENT_ID", None),
        ("BFF_REDIS_URL", "redis://h:abc/0"),
        ("BFF_LOG_LEVEL", "loud"),
        ("BFF_API_UPSTREAMS", json.dumps({"echo": {"url": "http://127.0.0.1:9", "forward_headers": ["Cookie"]}})),
        # Read by gunicorn.conf.py (app/server_settings.py's load_server_settings)
        ("BFF_WORKER_CLASS", "eventlet"),
        ("BFF_WORKERS", "two"),
        ("BFF_WORKER_TIMEOUT", "0"),
        ("BFF_KEEPALIVE", "-1"),
        ("PROMETHEUS_MULTIPROC_DIR", "/proc/no-such-folder/metrics"),
    ],
)
def test_gunicorn_refuses_to_start_with_one_line_naming_the_bad_variable(tmp_path, variable, value):
    result = start_gunicorn(tmp_path, variable, value)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"bff: configuration error: {variable}: ")
    assert list(tmp_path.iterdir()) == []  # no metrics folder left behind by a failed start


def test_every_mistake_in_the_upstreams_is_one_line_naming_the_variable(tmp_path):
    upstreams = {
        "orders": {"url": "http://127.0.0.1:9", "token": "service"},
        "reports": {"url": "http://127.0.0.1:9", "token": "none", "scope": "read"},
        "audit": {"url": "http://127.0.0.1:9", "resource": "urn:x#y"},
    }
    result = start_gunicorn(tmp_path, "BFF_API_UPSTREAMS", json.dumps(upstreams))
    assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("bff: configuration error: BFF_API_UPSTREAMS: '") for line in lines)
    assert ["'orders'" in lines[0], "'reports'" in lines[1], "'audit'" in lines[2]] == [True] * 3


def test_forwarded_allow_ips_is_checked_by_gunicorn_itself_in_one_line(tmp_path):
    """gunicorn reads FORWARDED_ALLOW_IPS before gunicorn.conf.py, so its own message names the
    value, not the variable (app.config checks it the same way, for everything else)."""
    result = start_gunicorn(tmp_path, "FORWARDED_ALLOW_IPS", "proxy.internal")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "'proxy.internal'" in line
    assert list(tmp_path.iterdir()) == []


def start_gunicorn(tmp_path, variable: str, value: str | None) -> subprocess.CompletedProcess:
    port = free_port()
    env = {**bff_env(f"http://localhost:{port}", UNUSED_ISSUER, UNUSED_REDIS), variable: value}
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "wsgi:app"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
