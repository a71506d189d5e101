"""Notifiers: where a notification goes (console, alert log, webhook, Twitter/X).

Each is a leaf: it sends one notification and reports the outcome as one of three exceptions, and knows
nothing of deduplication, silences, routing or retries, which are the notify loop's.
"""

from msgrelay.alerting.notifiers.base import (
    DEFAULT_RETRY_AFTER_S,
    MAX_RETRY_AFTER_S,
    Notifier,
    redact_url,
    retry_after_s,
)
from msgrelay.alerting.notifiers.local import AlertLogNotifier, ConsoleNotifier
from msgrelay.alerting.notifiers.settings import build_notifier
from msgrelay.alerting.notifiers.twitter import TwitterNotifier
from msgrelay.alerting.notifiers.webhook import WebhookNotifier
from msgrelay.alerting.settings import (
    AlertLogSettings,
    ConsoleSettings,
    NotifierSettings,
    TwitterSettings,
    WebhookSettings,
    parse_notifier_settings,
)

__all__ = [
    "DEFAULT_RETRY_AFTER_S",
    "MAX_RETRY_AFTER_S",
    "AlertLogNotifier",
    "AlertLogSettings",
    "ConsoleNotifier",
    "ConsoleSettings",
    "Notifier",
    "NotifierSettings",
    "TwitterNotifier",
    "TwitterSettings",
    "WebhookNotifier",
    "WebhookSettings",
    "build_notifier",
    "parse_notifier_settings",
    "redact_url",
    "retry_after_s",
]
