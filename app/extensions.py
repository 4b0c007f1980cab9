"""The app's shared objects, built once in `create_app` and read here, typed (as the Flask
tutorial's `get_db()`): one frozen `Services` under one `app.extensions` key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from .client_tokens import ClientTokens
    from .config import Settings
    from .crypto import CookieSealer
    from .oidc import Provider
    from .redis_client import RedisClient
    from .sessions import SessionStore

KEY = "bff"


@dataclass(frozen=True)
class Services:
    settings: Settings
    provider: Provider
    redis: RedisClient
    store: SessionStore
    cookie_sealer: CookieSealer
    client_tokens: ClientTokens


def install(app: Flask, services: Services) -> None:
    app.extensions[KEY] = services


def services() -> Services:
    return current_app.extensions[KEY]


def settings() -> Settings:
    return services().settings


def provider() -> Provider:
    return services().provider


def store() -> SessionStore:
    return services().store


def cookie_sealer() -> CookieSealer:
    return services().cookie_sealer


def client_tokens() -> ClientTokens:
    return services().client_tokens
