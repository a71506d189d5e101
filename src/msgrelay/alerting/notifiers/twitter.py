"""Posts alerts to Twitter/X through tweepy's own v2 client (``POST /2/tweets``, OAuth 1.0a user context).

Twitter has no idempotency key, but it refuses a tweet identical to a recent one with a 403 "duplicate
content": that answer means the text was posted by an earlier attempt, so it counts as delivered. This is
what makes retrying a timed-out post safe.
"""

from __future__ import annotations

import time
from typing import Final

import requests
import requests.adapters
import tweepy

from msgrelay.alerting.model import Notification
from msgrelay.alerting.notifiers.base import DEFAULT_RETRY_AFTER_S, clamp_delay
from msgrelay.alerting.settings import TWITTER_API
from msgrelay.errors import NotifyDeferred, NotifyPermanentError, NotifyTransientError
from msgrelay.sinks.lines import escape

_DUPLICATE: Final = "duplicate content"


class _ApiAdapter(requests.adapters.HTTPAdapter):
    """Gives every request a timeout (tweepy sets none: a stalled API would hang the notify loop for
    ever) and, when ``api_url`` is not Twitter's own host, sends it there instead (a proxy, a test server)."""

    def __init__(self, api_url: str, timeout_s: float) -> None:
        super().__init__(max_retries=0)  # retries are the notify loop's business, with its own budget
        self._api_url = api_url.rstrip("/")
        self._timeout_s = timeout_s

    def send(  # noqa: PLR0917  # the signature requests calls
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        if request.url and request.url.startswith(TWITTER_API) and self._api_url != TWITTER_API:
            request.url = self._api_url + request.url[len(TWITTER_API) :]
        timeout = self._timeout_s if timeout is None else timeout
        return super().send(request, stream, timeout, verify, cert, proxies)


class TwitterNotifier:
    """Tweets each notification's text (at most 280 characters, as the notify loop renders it)."""

    def __init__(
        self,
        consumer_key: str,
        consumer_secret: str,
        access_token: str,
        access_token_secret: str,
        *,
        timeout_s: float = 10.0,
        api_url: str = TWITTER_API,
        name: str = "twitter",
    ) -> None:
        self.name = name
        self._client = tweepy.Client(
            consumer_key=consumer_key,
            consumer_secret=consumer_secret,
            access_token=access_token,
            access_token_secret=access_token_secret,
        )
        self._client.session.mount(TWITTER_API + "/", _ApiAdapter(api_url, timeout_s))

    def send(self, notification: Notification) -> None:
        # Every tweepy/requests exception is re-raised `from None`: they carry the request, whose
        # Authorization header names the consumer key and access token.
        try:
            self._client.create_tweet(text=notification.text, user_auth=True)
        except tweepy.TooManyRequests as exc:
            delay = _reset_delay(exc.reset_time)
            message = f"{self._describe(exc)} (retry after {delay:g} s)"
            raise NotifyDeferred(message, retry_after_s=delay) from None
        except tweepy.TwitterServerError as exc:
            raise NotifyTransientError(self._describe(exc)) from None
        except tweepy.Forbidden as exc:
            if any(_DUPLICATE in str(message).lower() for message in exc.api_messages):
                return  # posted by an earlier attempt
            raise NotifyPermanentError(self._describe(exc)) from None
        except tweepy.HTTPException as exc:  # 400, 401, 404 and any other refusal
            error = NotifyTransientError if exc.response.status_code == 408 else NotifyPermanentError
            raise error(self._describe(exc)) from None
        except requests.RequestException as exc:  # refused, reset, timed out, cut short: the post may retry
            raise NotifyTransientError(f"{self.name}: {type(exc).__name__}: {_first_line(exc)}") from None

    def _describe(self, exc: tweepy.HTTPException) -> str:
        # tweepy's text is "<status> <reason>" then the API's "<code> - <message>" lines.
        return f"{self.name}: HTTP {escape(str(exc).replace(chr(10), '; '))}"

    def close(self) -> None:
        self._client.session.close()

    def __repr__(self) -> str:
        return f"TwitterNotifier(name={self.name!r})"


def _reset_delay(reset_time: int | None) -> float:
    """Seconds until ``x-rate-limit-reset`` (epoch seconds), or the default without one."""
    if reset_time is None:
        return DEFAULT_RETRY_AFTER_S
    return clamp_delay(reset_time - time.time())


def _first_line(exc: Exception) -> str:
    # requests' messages repeat urllib3's, which name host and path only (no credentials); keep them short.
    return escape(str(exc).splitlines()[0][:300]) if str(exc) else "no detail"
