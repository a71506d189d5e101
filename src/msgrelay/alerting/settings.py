"""The settings models of the alert parts, as read from the config: pydantic only, so that loading the
configuration never imports an HTTP client or tweepy (every command loads it; only two need those)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, TypeAdapter, ValidationError, model_validator

from msgrelay.errors import ConfigError
from msgrelay.settings_table import SettingsTable

TWITTER_API: Final = "https://api.twitter.com"
"""The host tweepy's v2 client hard-codes in ``BaseClient.request``."""
WebhookStyle = Literal["json", "slack", "discord"]


# --- checks of the monitor -----------------------------------------------------------------------------

CheckKind = Literal["http", "tcp", "redis", "command"]

_FIELDS_OF_KIND: dict[str, frozenset[str]] = {
    "http": frozenset({"url", "expect_status", "body_contains", "method"}),
    "tcp": frozenset({"host", "port"}),
    "redis": frozenset({"url"}),
    "command": frozenset({"command"}),
}
_REQUIRED_OF_KIND: dict[str, tuple[str, ...]] = {
    "http": ("url",),
    "tcp": ("host", "port"),
    "redis": ("url",),
    "command": ("command",),
}


class CheckSettings(SettingsTable):
    """One monitored service, as written in the config (``[[monitor.checks]]``).

    ``expect_status`` unset means any 2xx or 3xx. A field of another kind of check is an error, so a typo
    like ``host`` on an HTTP check is not silently ignored."""

    service: str = Field(min_length=1)
    kind: CheckKind
    url: str | None = Field(None, description="http(s):// for http, redis:// rediss:// unix:// for redis")
    expect_status: frozenset[int] | None = None
    body_contains: str | None = None
    method: str = "GET"
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    command: str | list[str] | None = Field(None, description="a string runs through /bin/sh -c")
    timeout_s: float = Field(5.0, gt=0)
    interval_s: float = Field(30.0, gt=0)
    failures_before_down: int = Field(3, ge=1)
    successes_before_up: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _fields_match_kind(self) -> Self:
        own = _FIELDS_OF_KIND[self.kind]
        foreign = sorted(name for name in self.model_fields_set if name in _ALL_KIND_FIELDS - own)
        if foreign:
            raise ValueError(f"{', '.join(foreign)} is not a setting of a {self.kind} check")
        missing = [name for name in _REQUIRED_OF_KIND[self.kind] if getattr(self, name) in (None, "", [])]
        if missing:
            raise ValueError(f"a {self.kind} check needs {' and '.join(missing)}")
        return self


_ALL_KIND_FIELDS = frozenset().union(*_FIELDS_OF_KIND.values())


# --- notifiers ---------------------------------------------------------------------------------------------


class _Kind(SettingsTable):
    """One ``[[alerts.notifiers]]`` table, tagged by its ``kind``."""


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


def notifier_name(settings: NotifierSettings) -> str:
    """The name routes use for a notifier (its ``name``; a webhook's default is ``webhook:<host>``)."""
    if isinstance(settings, WebhookSettings) and settings.name is None:
        return f"webhook:{urlsplit(settings.url.get_secret_value()).hostname or ''}"
    return str(settings.name)
