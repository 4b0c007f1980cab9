"""`flask --app wsgi sessions ...` against live sessions in the test Redis."""

from __future__ import annotations

import json
import subprocess

import pytest

from app import create_app
from app.config import load_settings
from dev.stack import ROOT, VENV_BIN, bff_env

FIELDS = {
    "handle",
    "sub",
    "sid",
    "created_at",
    "last_seen",
    "idle_expires_at",
    "expires_at",
    "access_token_expires_at",
    "user_agent",
    "client_ip",
}


@pytest.fixture
def cli(stack):
    """`flask sessions ...` in this process, as the Flask tutorial's `runner` fixture does, with the
    settings the service has (one real `flask --app wsgi` process is tested below)."""
    app = create_app(load_settings(bff_env(stack.bff_url, stack.issuer, stack.redis_url)))
    runner = app.test_cli_runner()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = runner.invoke(args=["sessions", *args])
        done = subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
        if check:
            assert done.returncode == 0, (done.stderr, result.exception)
        return done

    return run


def test_the_flask_command_runs_with_the_services_environment(stack, make_agent):
    make_agent().login("flask-command")
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi", "sessions", "list", "--user", "flask-command", "--json"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **bff_env(stack.bff_url, stack.issuer, stack.redis_url)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert [entry["sub"] for entry in json.loads(result.stdout)] == ["flask-command"]


def test_list_for_a_user_as_json_shows_every_field_and_nothing_that_grants_access(stack, make_agent, cli):
    a = make_agent(user_agent="Firefox/140 (cli test)")
    a.login("cli-user")
    make_agent().login("cli-user")
    listed = json.loads(cli("list", "--user", "cli-user", "--json").stdout)
    assert len(listed) == 2
    assert all(set(entry) == FIELDS for entry in listed)
    mine = next(e for e in listed if e["user_agent"] == "Firefox/140 (cli test)")
    assert mine["sub"] == "cli-user" and mine["sid"] and mine["client_ip"] == "127.0.0.1"
    assert mine["created_at"] <= mine["last_seen"] <= mine["idle_expires_at"] <= mine["expires_at"]
    assert mine["access_token_expires_at"] > mine["created_at"]
    output = cli("list", "--json").stdout + cli("list").stdout + cli("show", mine["handle"]).stdout
    assert a.session_cookie not in output and a.session_cookie.split(".")[1] not in output
    assert not [t for t in stack.issued_tokens() if t in output]


def test_list_as_a_table_is_aligned(make_agent, cli):
    make_agent(user_agent="table-agent").login("table-user")
    lines = cli("list", "--user", "table-user").stdout.splitlines()
    assert lines[0].split()[:2] == ["HANDLE", "SUB"] and len(lines) == 2
    for title in ("SUB", "LAST SEEN", "ABSOLUTE EXPIRY", "CLIENT IP", "USER AGENT"):
        assert lines[1][lines[0].index(title) - 2 : lines[0].index(title)] == "  "


def test_show_finds_one_session_by_handle(make_agent, cli):
    make_agent().login("show-user")
    (entry,) = json.loads(cli("list", "--user", "show-user", "--json").stdout)
    shown = json.loads(cli("show", entry["handle"], "--json").stdout)
    assert shown["handle"] == entry["handle"] and shown["sub"] == "show-user"
    missing = cli("show", "AAAAAAAAAAAA.AAAAAAAAAA", check=False)
    assert missing.returncode == 1 and "no live session" in missing.stderr


def test_revoke_by_handle_ends_that_session_and_revokes_its_refresh_token(stack, make_agent, cli):
    keep, end = make_agent(), make_agent(user_agent="to-revoke")
    keep.login("revoke-user")
    end.login("revoke-user")
    refresh_token = stack.latest_tokens()["refresh_token"]
    entries = json.loads(cli("list", "--user", "revoke-user", "--json").stdout)
    handle = next(e["handle"] for e in entries if e["user_agent"] == "to-revoke")
    assert cli("revoke", handle).stdout.strip() == "revoked 1 session"
    assert end.user().status_code == 401 and keep.user().status_code == 200
    refused = stack.idp_token_request(grant_type="refresh_token", refresh_token=refresh_token)
    assert refused.status_code == 400


def test_revoke_by_user_ends_all_of_their_sessions_and_no_one_elses(make_agent, cli):
    agents = [make_agent() for _ in range(3)]
    for a in agents:
        a.login("everywhere")
    other = make_agent()
    other.login("elsewhere")
    assert cli("revoke", "--user", "everywhere").stdout.strip() == "revoked 3 sessions"
    assert all(a.user().status_code == 401 for a in agents)
    assert other.user().status_code == 200
    assert json.loads(cli("list", "--user", "everywhere", "--json").stdout) == []


def test_count_counts_stored_sessions(stack, make_agent, cli):
    before = int(cli("count").stdout)
    make_agent().login("counted")
    assert int(cli("count").stdout) == before + 1


def test_revoke_needs_exactly_one_target(cli):
    assert cli("revoke", check=False).returncode == 2
    assert cli("revoke", "x", "--user", "y", check=False).returncode == 2
