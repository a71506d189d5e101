"""Generic webhook notifier: a JSON POST through httpx, with Slack- and Discord-shaped payloads.

Webhook URLs are credentials (Slack and Discord put the token in the path), so the URL appears anywhere
(``repr``, error messages, httpx's own request log) only as ``scheme://host/…``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx

from msgrelay.alerting.model import Notification
from msgrelay.alerting.notifiers.base import alert_record, redact_url, retry_after_s
from msgrelay.alerting.settings import WebhookStyle
from msgrelay.errors import ConfigError, NotifyDeferred, NotifyPermanentError, NotifyTransientError
from msgrelay.sinks.lines import _safe_json, escape

STYLES: Final[frozenset[str]] = frozenset({"json", "slack", "discord"})
DISCORD_MAX_CONTENT: Final = 2000
"""Discord refuses (400) a message whose ``content`` is longer."""
_BODY_PREVIEW: Final = 200
"""Characters of a refusing receiver's answer kept in the error ("invalid_token", "no_text" ...)."""
_MAX_BODY_READ: Final = 64 * 1024
_RETRYABLE_STATUS: Final = frozenset({408, 425})


def payload(notification: Notification, style: WebhookStyle) -> dict[str, object]:
    """The JSON body for ``style``."""
    if style == "slack":
        # Slack reads &, < and > as markup: escaped, an alert text cannot ping <!channel> or forge a link.
        text = notification.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return {"text": text}
    if style == "discord":
        content = notification.text
        if len(content) > DISCORD_MAX_CONTENT:
            content = content[: DISCORD_MAX_CONTENT - 1] + "…"
        # No mentions at all: an alert message saying "@everyone" must not page a whole server.
        return {"content": content, "allowed_mentions": {"parse": []}}
    return {
        "key": notification.key,
        "kind": str(notification.kind),
        "text": notification.text,
        "alerts": [alert_record(alert) for alert in notification.alerts],
    }


class _RedactUrls(logging.Filter):
    """httpx logs every request with its full URL at INFO: show webhook URLs redacted there too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(arg, httpx.URL) for arg in record.args):
            record.args = tuple(redact_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


_httpx_logger = logging.getLogger("httpx")
if not any(isinstance(f, _RedactUrls) for f in _httpx_logger.filters):
    _httpx_logger.addFilter(_RedactUrls())


class WebhookNotifier:
    """POSTs each notification as JSON to ``url``; the notification key goes as ``Idempotency-Key``.

    2xx is delivered; 429 is :class:`NotifyDeferred` (``Retry-After``); 5xx, 408, timeouts, refused or
    dropped connections and answers cut short are :class:`NotifyTransientError`; any other status
    (4xx, a redirect: configure the final URL) is :class:`NotifyPermanentError`. ``timeout_s`` bounds each
    phase (connect, send, each read) and the body read stops ``timeout_s`` after the send began, so a
    receiver that trickles bytes cannot hold the notify loop: a send ends within about 2 x ``timeout_s``."""

    def __init__(
        self,
        url: str,
        *,
        style: WebhookStyle = "json",
        timeout_s: float = 5.0,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self._safe_url = redact_url(url)
        _check_url(url, self._safe_url)
        if style not in STYLES:
            raise ConfigError(f"webhook {self._safe_url}: style is one of {sorted(STYLES)}, got {style!r}")
        if not timeout_s > 0:
            raise ConfigError(f"webhook {self._safe_url}: timeout_s must be > 0, not {timeout_s!r}")
        self._url = url
        self._style: WebhookStyle = style
        self._timeout_s = timeout_s
        self.name = name or f"webhook:{urlsplit(url).hostname}"
        self._secrets = _secret_parts(url, headers or {})
        self._client = httpx.Client(
            timeout=timeout_s, headers=dict(headers or {}), follow_redirects=False, trust_env=True
        )

    def send(self, notification: Notification) -> None:
        body = _safe_json(payload(notification, self._style)).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": _header_value(notification.key)}
        try:
            status, retry_after, preview = self._post(body, headers)
        # `from None` throughout: httpx's exceptions hold the request, whose URL holds the token.
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise NotifyPermanentError(self._describe(exc)) from None
        except (httpx.HTTPError, httpx.StreamError) as exc:  # timeouts, refused, reset, cut short, bad gzip
            raise NotifyTransientError(self._describe(exc)) from None
        self._raise_for_status(status, retry_after, preview)

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str | None, str]:
        """Status, ``Retry-After`` and the start of the answer, the whole body read within the deadline."""
        deadline = time.monotonic() + self._timeout_s
        with self._client.stream("POST", self._url, content=body, headers=headers) as response:
            received = bytearray()
            # Read to the end (or the cap): a body cut short raises here and is retried like any drop.
            for chunk in response.iter_bytes():
                if len(received) < _MAX_BODY_READ:
                    received += chunk
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("answer slower than the timeout", request=response.request)
                if len(received) >= _MAX_BODY_READ:
                    break
            preview = received[:_BODY_PREVIEW].decode("utf-8", "replace")
            return response.status_code, response.headers.get("Retry-After"), preview

    def _raise_for_status(self, status: int, retry_after: str | None, preview: str) -> None:
        if 200 <= status < 300:
            return
        message = f"{self.name} ({self._safe_url}): HTTP {status}"
        if preview:
            message += f": {self._scrub(preview)}"
        if status == 429:
            delay = retry_after_s(retry_after)
            raise NotifyDeferred(f"{message} (retry after {delay:g} s)", retry_after_s=delay)
        if status >= 500 or status in _RETRYABLE_STATUS:
            raise NotifyTransientError(message)
        raise NotifyPermanentError(message)

    def _describe(self, exc: Exception) -> str:
        detail = str(exc) or "no detail"
        return f"{self.name} ({self._safe_url}): {type(exc).__name__}: {self._scrub(detail)}"

    def _scrub(self, text: str) -> str:
        """``text`` (an answer, an exception's words) escaped, with any echo of a secret cut out."""
        for secret in self._secrets:
            text = text.replace(secret, "…")
        return escape(text)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"WebhookNotifier(name={self.name!r}, url={self._safe_url!r}, style={self._style!r})"


def _check_url(url: str, safe_url: str) -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"webhook URL {safe_url} is not a valid URL") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"webhook URL {safe_url} must be an http:// or https:// URL with a host")


_MIN_SECRET_LEN: Final = 6
"""Shorter URL pieces ("api", "hooks") are words, not tokens: cutting them would garble every message."""


def _secret_parts(url: str, headers: Mapping[str, str]) -> tuple[str, ...]:
    """Every piece of ``url`` and of the header values that may be a credential, longest first.

    A receiver's error answer may echo the token alone (Slack: "invalid_token xoxb-..."), not the URL."""
    parts = urlsplit(url)
    pieces = {url, parts.path, parts.query, parts.username or "", parts.password or ""}
    pieces.update(segment for segment in parts.path.split("/"))
    pieces.update(value for _, value in parse_qsl(parts.query))
    pieces.update(headers.values())
    pieces.update(word for value in headers.values() for word in value.split())
    pieces.update({unquote(piece) for piece in pieces})
    return tuple(sorted((p for p in pieces if len(p) >= _MIN_SECRET_LEN), key=len, reverse=True))


def _header_value(key: str) -> str:
    """``key`` as a header value: the notify loop's keys are ASCII already; anything else is %-encoded
    rather than refused, so an odd key never turns a deliverable notification into an error."""
    return key if key.isascii() and key.isprintable() else quote(key, safe="")
