"""The app's shared objects, typed, in one place: what `create_app` puts in `app.extensions`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from .config import Settings
    from .crypto import CookieSealer
    from .oidc import Provider
    from .sessions import SessionStore


def settings() -> Settings:
    return current_app.extensions["bff.settings"]


def provider() -> Provider:
    return current_app.extensions["bff.provider"]


def store() -> SessionStore:
    return current_app.extensions["bff.store"]


def login_sealer() -> CookieSealer:
    return current_app.extensions["bff.login_sealer"]
