"""`flask --app wsgi sessions ...`: who is signed in, since when, from where; end any session.
`flask --app wsgi nginx-config`: the nginx configuration for these settings (nginx_config.py).

Prints handles, never cookie values or tokens: nothing shown here grants access.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime

import click
from flask import Flask
from flask.cli import AppGroup

from . import extensions
from .nginx_config import MODES, NginxOptions, render
from .sessions import SessionFilter, SessionInfo
from .signout import end_sessions

sessions_cli = AppGroup("sessions", help="Inspect and revoke BFF sessions.")

COLUMNS = [
    ("HANDLE", "handle"),
    ("SUB", "sub"),
    ("SID", "sid"),
    ("CREATED", "created_at"),
    ("LAST SEEN", "last_seen"),
    ("IDLE EXPIRY", "idle_expires_at"),
    ("ABSOLUTE EXPIRY", "expires_at"),
    ("ACCESS TOKEN EXPIRY", "access_token_expires_at"),
    ("CLIENT IP", "client_ip"),
    ("USER AGENT", "user_agent"),
]


def _when(value: int | None) -> str:
    return "-" if value is None else datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _cell(info: SessionInfo, field: str) -> str:
    value = getattr(info, field)
    if field.endswith("_at") or field == "last_seen":
        return _when(value)
    return "-" if value in (None, "") else str(value)


def format_table(infos: list[SessionInfo]) -> str:
    """Aligned columns, one session a row; the user agent last since it is the longest."""
    rows = [[title for title, _ in COLUMNS]] + [[_cell(i, field) for _, field in COLUMNS] for i in infos]
    widths = [max(len(row[c]) for row in rows) for c in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _emit(infos: list[SessionInfo], as_json: bool, single: bool = False) -> None:
    if as_json:
        data = [asdict(i) for i in infos]
        click.echo(json.dumps(data[0] if single else data, indent=2))
    else:
        click.echo(format_table(infos))


@sessions_cli.command("list")
@click.option("--user", "sub", help="Only the sessions of this subject (sub).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
def list_sessions(sub: str | None, as_json: bool) -> None:
    """List live sessions, everyone's or one user's."""
    store = extensions.store()
    refs = store.find(SessionFilter(sub=sub)) if sub else list(store.all_refs())
    infos = sorted(store.describe(refs), key=lambda i: (i.sub, i.created_at))
    _emit(infos, as_json)


@sessions_cli.command("show")
@click.argument("handle")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
def show_session(handle: str, as_json: bool) -> None:
    """Show one session by its handle."""
    store = extensions.store()
    ref = store.ref_for_handle(handle)
    infos = store.describe([ref]) if ref else []
    if not infos:
        click.echo(f"no live session with handle {handle}", err=True)
        sys.exit(1)
    _emit(infos, as_json, single=True)


@sessions_cli.command("revoke")
@click.argument("handle", required=False)
@click.option("--user", "sub", help="End every session of this subject (sub).")
def revoke_sessions(handle: str | None, sub: str | None) -> None:
    """End one session (HANDLE) or all of a user's (--user SUB); revokes refresh tokens at the IdP."""
    if bool(handle) == bool(sub):
        raise click.UsageError("give either a HANDLE or --user SUB")
    store = extensions.store()
    if handle:
        ref = store.ref_for_handle(handle)
        if ref is None:
            click.echo(f"no live session with handle {handle}", err=True)
            sys.exit(1)
        flt = SessionFilter(session=ref)
    else:
        flt = SessionFilter(sub=sub)
    ended = end_sessions(store, extensions.provider(), flt)
    click.echo(f"revoked {len(ended)} session{'s' if len(ended) != 1 else ''}")


@sessions_cli.command("count")
def count_sessions() -> None:
    """How many sessions are live (exact: checks each one)."""
    store = extensions.store()
    click.echo(len(store.describe(list(store.all_refs()))))


@click.command("nginx-config", help="Write the nginx configuration for these settings (README, behind nginx).")
@click.option("--bff", "bff_address", default=NginxOptions.bff_address, show_default=True, help="gunicorn's address.")
@click.option("--listen", default=NginxOptions.listen, show_default=True, help="nginx's https port.")
@click.option(
    "--http-redirect", "http_port", default=80, show_default=True, help="http port redirecting to https; 0: none."
)
@click.option("--cert", "certificate", default=NginxOptions.certificate, show_default=True)
@click.option("--key", "certificate_key", default=NginxOptions.certificate_key, show_default=True)
@click.option("--mode", type=click.Choice(MODES), default="offload", show_default=True, help="Who proxies /api.")
@click.option(
    "--sign-in-rate",
    type=click.IntRange(min=0),
    default=NginxOptions.sign_in_rate,
    show_default=True,
    help="/bff/login per second per client address (a burst of 4x passes); 0: no limit.",
)
@click.option("--output", type=click.Path(dir_okay=False), default="-", help="File to write (mode 600); - for stdout.")
def nginx_config_command(
    bff_address: str,
    listen: int,
    http_port: int,
    certificate: str,
    certificate_key: str,
    mode: str,
    sign_in_rate: int,
    output: str,
) -> None:
    settings = extensions.settings()
    if mode == "offload" and not settings.authz_secret:
        raise click.ClickException("--mode offload needs BFF_AUTHZ_SECRET (nginx sends it to /bff/authz)")
    options = NginxOptions(bff_address, listen, http_port or None, certificate, certificate_key, mode, sign_in_rate)
    try:
        text = render(settings, options)
    except ValueError as error:
        raise click.ClickException(f"BFF_API_UPSTREAMS: {error}") from None
    if output == "-":
        click.echo(text, nl=False)
        return
    descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the secret
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def init_app(app: Flask) -> None:
    app.cli.add_command(sessions_cli)
    app.cli.add_command(nginx_config_command)
