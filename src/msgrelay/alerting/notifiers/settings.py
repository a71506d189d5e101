"""Configuration of notifiers: one small model per kind, secrets as ``SecretStr`` (masked when shown)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError

from msgrelay.alerting.notifiers.base import Notifier
from msgrelay.alerting.notifiers.local import AlertLogNotifier, ConsoleNotifier
from msgrelay.alerting.notifiers.twitter import TWITTER_API, TwitterNotifier
from msgrelay.alerting.notifiers.webhook import WebhookNotifier, WebhookStyle
from msgrelay.errors import ConfigError


class _Kind(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsoleSettings(_Kind):
    kind: Literal["console"] = "console"
    name: str = "console"


class AlertLogSettings(_Kind):
    kind: Literal["log"]
    path: Path
    fsync: bool = False
    name: str = "log"


class WebhookSettings(_Kind):
    kind: Literal["webhook"]
    url: SecretStr
    """Slack and Discord webhook URLs carry their token in the path."""
    style: WebhookStyle = "json"
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers (``Authorization: Bearer ...``): secret too."""
    name: str | None = None
    """Default: ``webhook:<host>``."""


class TwitterSettings(_Kind):
    kind: Literal["twitter"]
    consumer_key: SecretStr
    consumer_secret: SecretStr
    access_token: SecretStr
    access_token_secret: SecretStr
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    api_url: str = TWITTER_API
    name: str = "twitter"


NotifierSettings = Annotated[
    ConsoleSettings | AlertLogSettings | WebhookSettings | TwitterSettings, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[NotifierSettings] = TypeAdapter(NotifierSettings)


def parse_notifier_settings(data: Mapping[str, Any]) -> NotifierSettings:
    """One notifier's settings from a config table (``{"kind": "webhook", "url": ...}``)."""
    try:
        return _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        # pydantic's text shows the input only for fields that failed, and SecretStr inputs as '**********'.
        raise ConfigError(f"invalid notifier settings: {exc}") from None


def build_notifier(settings: NotifierSettings) -> Notifier:
    """The notifier ``settings`` describe; :class:`ConfigError` when they cannot work (a bad URL)."""
    if isinstance(settings, ConsoleSettings):
        return ConsoleNotifier(name=settings.name)
    if isinstance(settings, AlertLogSettings):
        return AlertLogNotifier(settings.path, fsync=settings.fsync, name=settings.name)
    if isinstance(settings, WebhookSettings):
        return WebhookNotifier(
            settings.url.get_secret_value(),
            style=settings.style,
            timeout_s=settings.timeout_s,
            headers={key: value.get_secret_value() for key, value in settings.headers.items()},
            name=settings.name,
        )
    return TwitterNotifier(
        settings.consumer_key.get_secret_value(),
        settings.consumer_secret.get_secret_value(),
        settings.access_token.get_secret_value(),
        settings.access_token_secret.get_secret_value(),
        timeout_s=settings.timeout_s,
        api_url=settings.api_url,
        name=settings.name,
    )


def notifier_name(settings: NotifierSettings) -> str:
    """The name routes use for a notifier (its ``name``; a webhook's default is ``webhook:<host>``)."""
    if isinstance(settings, WebhookSettings) and settings.name is None:
        return f"webhook:{urlsplit(settings.url.get_secret_value()).hostname or ''}"
    return str(settings.name)
