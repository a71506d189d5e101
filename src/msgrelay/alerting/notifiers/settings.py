"""Building a notifier from its settings (the models are in :mod:`msgrelay.alerting.settings`)."""

from __future__ import annotations

from msgrelay.alerting.notifiers.base import Notifier
from msgrelay.alerting.notifiers.local import AlertLogNotifier, ConsoleNotifier
from msgrelay.alerting.notifiers.twitter import TwitterNotifier
from msgrelay.alerting.notifiers.webhook import WebhookNotifier
from msgrelay.alerting.settings import AlertLogSettings, ConsoleSettings, NotifierSettings, WebhookSettings


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
