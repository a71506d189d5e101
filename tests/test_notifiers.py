"""Notifiers against real local HTTP servers (127.0.0.1, port 0): what each answer means to the notify loop.

Every server here is a stdlib ``http.server`` in a thread that plays a scripted list of answers and records
what it received; nothing is mocked between the notifier and the socket, and nothing leaves the machine.
"""

from __future__ import annotations

import email.utils
import io
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_servers import Reply, Server
from msgrelay.alerting.model import Alert, Notification, NotificationKind, Status
from msgrelay.alerting.notifiers import (
    AlertLogNotifier,
    ConsoleNotifier,
    Notifier,
    TwitterNotifier,
    WebhookNotifier,
    WebhookSettings,
    build_notifier,
    parse_notifier_settings,
    retry_after_s,
)
from msgrelay.errors import ConfigError, NotifyDeferred, NotifyPermanentError, NotifyTransientError

TOKEN = "XyZSecretTok3n"
QUERY_TOKEN = "QuerySecret99"
PASSWORD = "UserPassw0rd"


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound but never listened on: connecting to it is refused, and nobody else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def notification(text: str = "db is DOWN: connection refused", key: str = "n-0001") -> Notification:
    alert = Alert("db", Status.DOWN, "connection refused", 1764000000.5, {"host": "db-1"})
    return Notification(key=key, kind=NotificationKind.FIRING, text=text, alerts=(alert,))


def secret_url(server: Server) -> str:
    return f"http://ops:{PASSWORD}@127.0.0.1:{server.port}/services/T01/B02/{TOKEN}?token={QUERY_TOKEN}"


def assert_no_secret(text: str) -> None:
    for secret in (TOKEN, QUERY_TOKEN, PASSWORD):
        assert secret not in text


# -- webhook: what each answer means ---------------------------------------------------------------------


def test_webhook_200_delivers_json_body_with_idempotency_key(serve: type[Server]) -> None:
    server = serve(Reply(200))
    notifier = WebhookNotifier(server.url(), name="webhook:ops")
    notifier.send(notification(key="n-42"))
    notifier.close()

    [request] = server.received
    assert request.headers["Idempotency-Key"] == "n-42"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "key": "n-42",
        "kind": "firing",
        "text": "db is DOWN: connection refused",
        "alerts": [
            {"service": "db", "status": "DOWN", "message": "connection refused", "timestamp": 1764000000.5}
        ],
    }
    assert isinstance(notifier, Notifier)
    assert notifier.name == "webhook:ops"


def test_webhook_slack_and_discord_payloads(serve: type[Server]) -> None:
    server = serve(Reply(204, body=b""))
    slack = WebhookNotifier(server.url(), style="slack")
    slack.send(notification(text="db <!channel> & co"))
    discord = WebhookNotifier(server.url(), style="discord")
    discord.send(notification(text="@everyone " + "x" * 2500))

    slack_body, discord_body = (request.json() for request in server.received)
    # Escaped as Slack asks, so an alert's text cannot ping a channel.
    assert slack_body == {"text": "db &lt;!channel&gt; &amp; co"}
    assert isinstance(discord_body, dict)
    assert len(discord_body["content"]) == 2000  # Discord refuses longer content
    assert discord_body["content"].startswith("@everyone xxx")
    assert discord_body["allowed_mentions"] == {"parse": []}  # and nobody is pinged by it


def test_webhook_idempotency_key_that_is_not_plain_ascii_is_percent_encoded(serve: type[Server]) -> None:
    server = serve(Reply(200))
    WebhookNotifier(server.url()).send(notification(key="db/DOWN/é\r\n"))
    assert server.received[0].headers["Idempotency-Key"] == "db%2FDOWN%2F%C3%A9%0D%0A"


def test_webhook_custom_headers_are_sent(serve: type[Server]) -> None:
    server = serve(Reply(200))
    WebhookNotifier(server.url(), headers={"Authorization": f"Bearer {TOKEN}"}).send(notification())
    assert server.received[0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_webhook_server_errors_are_transient(serve: type[Server], status: int) -> None:
    server = serve(Reply(status, body=b"upstream down"))
    notifier = WebhookNotifier(secret_url(server))
    with pytest.raises(NotifyTransientError) as caught:
        notifier.send(notification())
    assert type(caught.value) is NotifyTransientError
    assert f"HTTP {status}" in str(caught.value)
    assert_no_secret(str(caught.value))


def test_webhook_503_then_200_is_delivered_on_the_retry_with_the_same_key(serve: type[Server]) -> None:
    server = serve(Reply(503), Reply(200))
    notifier = WebhookNotifier(server.url())
    with pytest.raises(NotifyTransientError):
        notifier.send(notification(key="n-7"))
    notifier.send(notification(key="n-7"))
    assert [request.headers["Idempotency-Key"] for request in server.received] == ["n-7", "n-7"]


def test_webhook_429_with_retry_after_seconds_defers(serve: type[Server]) -> None:
    server = serve(Reply(429, headers={"Retry-After": "7"}))
    with pytest.raises(NotifyDeferred) as caught:
        WebhookNotifier(secret_url(server)).send(notification())
    assert type(caught.value) is NotifyDeferred
    assert caught.value.retry_after_s == 7.0
    assert_no_secret(str(caught.value))


def test_webhook_429_with_retry_after_date_defers_until_then(serve: type[Server]) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    server = serve(Reply(429, headers={"Retry-After": when}))
    with pytest.raises(NotifyDeferred) as caught:
        WebhookNotifier(server.url()).send(notification())
    assert 115 <= caught.value.retry_after_s <= 121


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, 30.0), ("soon", 30.0), ("86400", 3600.0), ("0", 0.0), ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0)],
)
def test_webhook_429_without_usable_retry_after(
    serve: type[Server], header: str | None, expected: float
) -> None:
    server = serve(Reply(429, headers={} if header is None else {"Retry-After": header}))
    with pytest.raises(NotifyDeferred) as caught:
        WebhookNotifier(server.url()).send(notification())
    assert caught.value.retry_after_s == expected  # default 30 s, capped at an hour, never negative


@pytest.mark.parametrize("status", [400, 401, 403, 404, 301])
def test_webhook_client_errors_are_permanent(serve: type[Server], status: int) -> None:
    server = serve(Reply(status, body=f"invalid_token {TOKEN}".encode()))
    notifier = WebhookNotifier(secret_url(server))
    with pytest.raises(NotifyPermanentError) as caught:
        notifier.send(notification())
    assert type(caught.value) is NotifyPermanentError
    assert f"HTTP {status}" in str(caught.value)
    assert "invalid_token" in str(caught.value)  # the receiver's reason is kept for the dead letter ...
    assert_no_secret(str(caught.value))  # ... but not an echo of the URL's token


def test_webhook_hanging_server_times_out_as_transient(serve: type[Server]) -> None:
    server = serve(Reply(hang=True))
    notifier = WebhookNotifier(secret_url(server), timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(NotifyTransientError) as caught:
        notifier.send(notification())
    assert server.hanging.is_set()  # the request did arrive: it is the answer that never came
    assert time.monotonic() - started < 2.0
    assert "Timeout" in str(caught.value)
    assert_no_secret(str(caught.value))


def test_webhook_timeout_bounds_a_trickling_answer(serve: type[Server]) -> None:
    server = serve(Reply(200, body=b"x" * 200, trickle_s=0.02))  # 4 s in all, each byte well in time
    started = time.monotonic()
    with pytest.raises(NotifyTransientError) as caught:
        WebhookNotifier(server.url(), timeout_s=0.3).send(notification())
    assert time.monotonic() - started < 2.0
    assert "Timeout" in str(caught.value)


def test_webhook_answer_cut_mid_body_is_transient(serve: type[Server]) -> None:
    server = serve(Reply(200, body=b'{"ok": tr', cut=True))
    with pytest.raises(NotifyTransientError) as caught:
        WebhookNotifier(secret_url(server)).send(notification())
    assert type(caught.value) is NotifyTransientError
    assert_no_secret(str(caught.value))


def test_webhook_connection_refused_is_transient(refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}/services/{TOKEN}?token={QUERY_TOKEN}"
    with pytest.raises(NotifyTransientError) as caught:
        WebhookNotifier(url, timeout_s=2).send(notification())
    assert type(caught.value) is NotifyTransientError
    assert_no_secret(str(caught.value))
    assert caught.value.__cause__ is None  # httpx's exception (holding the URL) is not chained


def test_webhook_never_shows_its_url_secrets(serve: type[Server], caplog: pytest.LogCaptureFixture) -> None:
    server = serve(Reply(200))
    notifier = WebhookNotifier(secret_url(server))
    with caplog.at_level(logging.DEBUG):
        notifier.send(notification())
    assert server.received[0].path == f"/services/T01/B02/{TOKEN}?token={QUERY_TOKEN}"  # sent as configured
    assert repr(notifier) == (
        f"WebhookNotifier(name='webhook:127.0.0.1', url='http://127.0.0.1:{server.port}/…', style='json')"
    )
    assert_no_secret(str(notifier))
    assert "HTTP Request: POST" in caplog.text  # httpx did log the request, redacted
    assert_no_secret(caplog.text)


def test_webhook_invalid_configuration_is_refused_without_showing_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        WebhookNotifier(f"ftp://example.invalid/{TOKEN}")
    assert_no_secret(str(caught.value))
    with pytest.raises(ConfigError):
        WebhookNotifier("http://127.0.0.1/hook", style="teams")  # type: ignore[arg-type]


def test_retry_after_parsing() -> None:
    assert retry_after_s(" 12 ") == 12.0
    assert retry_after_s("Wed, 25 Nov 2026 08:00:10 GMT", now=1795593600.0) == 10.0  # 08:00:00 UTC
    assert retry_after_s("-5") == 30.0  # not delay-seconds: the default


# -- console and alert log -------------------------------------------------------------------------------


def test_console_prints_one_escaped_line_per_notification() -> None:
    stream = io.StringIO()
    notifier = ConsoleNotifier(stream)
    notifier.send(notification(text="db is DOWN\nfake: line \x1b[2J\u202e"))
    notifier.send(notification(text="db is UP"))
    assert stream.getvalue() == "db is DOWN\\nfake: line \\x1b[2J\\u202e\ndb is UP\n"
    assert notifier.name == "console"
    assert isinstance(notifier, Notifier)


def test_console_on_a_closed_stream_is_permanent() -> None:
    stream = io.StringIO()
    stream.close()
    with pytest.raises(NotifyPermanentError):
        ConsoleNotifier(stream).send(notification())


def test_console_writes_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleNotifier().send(notification())
    assert capsys.readouterr().out == "db is DOWN: connection refused\n"


def test_alert_log_appends_one_json_line_per_notification(tmp_path: Path) -> None:
    path = tmp_path / "alerts.log"
    notifier = AlertLogNotifier(path)
    before = time.time()
    notifier.send(notification(text="db is DOWN\nsecond line?", key="n-1"))
    notifier.send(
        Notification(
            "n-2", NotificationKind.RESOLVED, "db is UP", (Alert("db", Status.UP, "ok", 1764000100.0),)
        )
    )
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # every line complete
    first, second = (json.loads(line) for line in lines[:-1])
    assert first["key"] == "n-1"
    assert first["kind"] == "firing"
    assert first["text"] == "db is DOWN\nsecond line?"  # kept exactly, yet on one line
    assert first["alerts"] == [
        {"service": "db", "status": "DOWN", "message": "connection refused", "timestamp": 1764000000.5}
    ]
    assert second["kind"] == "resolved"
    assert second["alerts"][0]["status"] == "UP"
    written = time.mktime(time.strptime(first["written"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before - 1 <= written <= time.time() + 1


def test_alert_log_cuts_a_line_torn_by_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "alerts.log"
    path.write_bytes(b'{"key":"old"}\n{"key":"torn-by-a-kil')
    AlertLogNotifier(path).send(notification(key="n-3"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["old", "n-3"]


def test_alert_log_in_a_missing_directory_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(NotifyPermanentError) as caught:
        AlertLogNotifier(tmp_path / "nowhere" / "alerts.log").send(notification())
    assert "nowhere" in str(caught.value)


# -- Twitter/X through tweepy ----------------------------------------------------------------------------

TWITTER_KEYS = ("ConsumerKey1", "ConsumerSecret2", "AccessToken3", "AccessSecret4")


def twitter(server_or_port: Server | int, timeout_s: float = 5.0) -> TwitterNotifier:
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    return TwitterNotifier(*TWITTER_KEYS, api_url=f"http://127.0.0.1:{port}", timeout_s=timeout_s)


def tweet_reply(status: int, body: object, headers: dict[str, str] | None = None) -> Reply:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return Reply(status, headers=headers, body=json.dumps(body).encode())


def assert_no_credentials(text: str) -> None:
    for secret in TWITTER_KEYS:
        assert secret not in text


def test_twitter_posts_the_text_with_user_auth(serve: type[Server]) -> None:
    server = serve(tweet_reply(201, {"data": {"id": "1", "text": "db is DOWN"}}))
    notifier = twitter(server)
    notifier.send(notification(text="db is DOWN"))
    notifier.close()

    [request] = server.received
    assert request.path == "/2/tweets"
    assert request.json() == {"text": "db is DOWN"}
    assert request.headers["Authorization"].startswith("OAuth ")  # OAuth 1.0a user context, signed
    assert 'oauth_consumer_key="ConsumerKey1"' in request.headers["Authorization"]
    assert isinstance(notifier, Notifier)
    assert repr(notifier) == "TwitterNotifier(name='twitter')"
    assert_no_credentials(repr(notifier))


def test_twitter_429_defers_until_the_rate_limit_resets(serve: type[Server]) -> None:
    reset = int(time.time()) + 300
    server = serve(tweet_reply(429, {"title": "Too Many Requests"}, {"x-rate-limit-reset": str(reset)}))
    with pytest.raises(NotifyDeferred) as caught:
        twitter(server).send(notification())
    assert 295 <= caught.value.retry_after_s <= 300


def test_twitter_429_without_reset_defers_by_default(serve: type[Server]) -> None:
    server = serve(tweet_reply(429, {"title": "Too Many Requests"}))
    with pytest.raises(NotifyDeferred) as caught:
        twitter(server).send(notification())
    assert caught.value.retry_after_s == 30.0


def test_twitter_503_is_transient(serve: type[Server]) -> None:
    server = serve(tweet_reply(503, {"title": "Service Unavailable"}))
    with pytest.raises(NotifyTransientError) as caught:
        twitter(server).send(notification())
    assert type(caught.value) is NotifyTransientError
    assert_no_credentials(str(caught.value))


@pytest.mark.parametrize("status", [400, 401, 404])
def test_twitter_refusals_are_permanent(serve: type[Server], status: int) -> None:
    server = serve(tweet_reply(status, {"title": "Unauthorized", "detail": "Unauthorized", "status": status}))
    with pytest.raises(NotifyPermanentError) as caught:
        twitter(server).send(notification())
    assert type(caught.value) is NotifyPermanentError
    assert f"HTTP {status}" in str(caught.value)
    assert_no_credentials(str(caught.value))


def test_twitter_duplicate_content_counts_as_delivered(serve: type[Server]) -> None:
    detail = "You are not allowed to create a Tweet with duplicate content."
    server = serve(tweet_reply(403, {"detail": detail, "title": "Forbidden", "status": 403}))
    twitter(server).send(notification())  # posted by an earlier attempt: no error
    assert len(server.received) == 1


def test_twitter_other_403_is_permanent(serve: type[Server]) -> None:
    detail = "You are not permitted to perform this action."
    server = serve(tweet_reply(403, {"detail": detail, "title": "Forbidden", "status": 403}))
    with pytest.raises(NotifyPermanentError) as caught:
        twitter(server).send(notification())
    assert "not permitted" in str(caught.value)


def test_twitter_connection_refused_hang_and_cut_are_transient(
    serve: type[Server], refused_port: int
) -> None:
    with pytest.raises(NotifyTransientError):
        twitter(refused_port).send(notification())
    hanging = serve(Reply(hang=True))
    started = time.monotonic()
    with pytest.raises(NotifyTransientError) as caught:
        twitter(hanging, timeout_s=0.3).send(notification())
    assert time.monotonic() - started < 2.0  # tweepy sets no timeout; the notifier does
    assert_no_credentials(str(caught.value))
    cut = serve(Reply(201, body=b'{"data": {"id"', cut=True))
    with pytest.raises(NotifyTransientError):
        twitter(cut).send(notification())


# -- settings --------------------------------------------------------------------------------------------


def test_settings_build_each_notifier_and_mask_secrets(serve: type[Server], tmp_path: Path) -> None:
    server = serve(Reply(200))
    webhook_settings = parse_notifier_settings(
        {"kind": "webhook", "url": secret_url(server), "style": "slack", "headers": {"X-Token": TOKEN}}
    )
    assert isinstance(webhook_settings, WebhookSettings)
    assert_no_secret(repr(webhook_settings))
    webhook = build_notifier(webhook_settings)
    webhook.send(notification())
    assert server.received[0].json() == {"text": "db is DOWN: connection refused"}
    assert server.received[0].headers["X-Token"] == TOKEN

    assert isinstance(build_notifier(parse_notifier_settings({"kind": "console"})), ConsoleNotifier)
    log = build_notifier(parse_notifier_settings({"kind": "log", "path": str(tmp_path / "a.log")}))
    assert isinstance(log, AlertLogNotifier)
    keys = dict(
        zip(
            ("consumer_key", "consumer_secret", "access_token", "access_token_secret"),
            TWITTER_KEYS,
            strict=True,
        )
    )
    twitter_settings = parse_notifier_settings({"kind": "twitter", **keys})
    assert_no_credentials(repr(twitter_settings))
    assert isinstance(build_notifier(twitter_settings), TwitterNotifier)


def test_settings_refuse_unknown_kinds_and_fields() -> None:
    with pytest.raises(ConfigError):
        parse_notifier_settings({"kind": "pager"})
    with pytest.raises(ConfigError) as caught:
        parse_notifier_settings({"kind": "webhook", "url": f"http://h/{TOKEN}", "retries": 3})
    assert_no_secret(str(caught.value))
