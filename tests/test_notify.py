"""The notify loop: alerts in Redis -> notifications posted to real local HTTP servers, never twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis

from local_servers import Reply, Server
from msgrelay.alerting import notify as notify_module
from msgrelay.alerting.codec import encode_alert
from msgrelay.alerting.model import Alert, Notification, Status
from msgrelay.alerting.notifiers import WebhookNotifier
from msgrelay.alerting.notify import NotifyLoop, NotifyPolicy
from msgrelay.alerting.silences import SilenceStore
from msgrelay.config import Settings
from msgrelay.dlq import DeadLetterStore
from msgrelay.errors import NotifyTransientError
from msgrelay.retries import RetryPolicy
from msgrelay.transport import Transport, create_transport

T0 = 1_764_000_000.0
HOOK = "hook"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(make_settings: Callable[..., Settings], transport_name: str) -> Settings:
    # claim_idle_s: a dead notify consumer's alerts (and, on lists, its heartbeat) are given up on quickly
    return make_settings(transport_name, alerts={"transport": transport_name}, consumer={"claim_idle_s": 0.2})


@pytest.fixture
def new_transport(settings: Settings) -> Iterator[Callable[[], Transport]]:
    made: list[Transport] = []

    def make() -> Transport:
        made.append(create_transport(settings, queue=settings.alerts.as_queue(settings.queue.namespace)))
        return made[-1]

    yield make
    for transport in made:
        transport.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


MakeLoop = Callable[..., NotifyLoop]


@pytest.fixture
def make_loop(new_transport: Callable[[], Transport], clock: Clock) -> Iterator[MakeLoop]:
    notifiers: list[WebhookNotifier] = []

    def make(
        server: Server,
        *,
        name: str = "n1",
        max_attempts: int = 8,
        notifier: object = None,
        group_wait_s: float = 0.0,
        max_deliveries: int = 5,
    ) -> NotifyLoop:
        hook = notifier or WebhookNotifier(server.url(), name=HOOK, timeout_s=2.0)
        if isinstance(hook, WebhookNotifier):
            notifiers.append(hook)
        policy = NotifyPolicy(
            default_notifiers=(HOOK,),
            repeat_interval_s=3600.0,
            lease_s=60.0,
            retry=RetryPolicy(base_s=10.0, cap_s=20.0, max_deliveries=max_attempts),
        )
        return NotifyLoop(
            new_transport(), {HOOK: hook}, policy, name=name, batch_size=5, clock=clock, claim_idle_s=0.2,
            group_wait_s=group_wait_s, max_deliveries=max_deliveries,
        )  # type: ignore[dict-item]  # fmt: skip

    yield make
    for hook in notifiers:
        hook.close()


def push(transport: Transport, *alerts: Alert | bytes) -> None:
    transport.send([a if isinstance(a, bytes) else encode_alert(a) for a in alerts])


def down(service: str = "db", at: float = T0) -> Alert:
    return Alert(service, Status.DOWN, "connection refused", at)


def up(service: str = "db", at: float = T0) -> Alert:
    return Alert(service, Status.UP, "answers again", at)


def cycle(loop: NotifyLoop) -> None:
    """One intake of everything queued, then one delivery round."""
    while loop.intake(0.0):
        pass
    loop.deliver_due()


def posted(server: Server) -> list[dict[str, object]]:
    return [orjson.loads(request.body) for request in server.received]  # type: ignore[misc]


def outbox(redis_client: redis.Redis, transport: Transport) -> list[tuple[bytes, float]]:
    return redis_client.zrange(transport.keys.outbox(), 0, -1, withscores=True)  # type: ignore[return-value]


def test_down_then_up_posts_one_notification_and_one_resolve_notice(
    serve: type[Server], make_loop: MakeLoop, redis_client: redis.Redis
) -> None:
    server = serve(Reply(200))
    loop = make_loop(server)
    push(loop.transport, down())
    cycle(loop)
    push(loop.transport, up(at=T0 + 5))
    cycle(loop)

    assert [body["text"] for body in posted(server)] == [
        "🔴 db is DOWN: connection refused",
        "✅ db is UP again: answers again",
    ]
    keys = [request.headers["Idempotency-Key"] for request in server.received]
    assert len(set(keys)) == 2
    assert outbox(redis_client, loop.transport) == []
    assert sum(loop.transport.pending().values()) == 0  # every alert acknowledged


def test_a_repeated_down_is_posted_once_then_again_after_the_repeat_interval(
    serve: type[Server], make_loop: MakeLoop, clock: Clock
) -> None:
    server = serve(Reply(200))
    loop = make_loop(server)
    for offset in (0, 60, 600):
        clock.now = T0 + offset
        push(loop.transport, down(at=clock.now))
        cycle(loop)
    clock.now = T0 + 3600
    push(loop.transport, down(at=clock.now))
    cycle(loop)

    texts = [body["text"] for body in posted(server)]
    assert len(texts) == 2
    assert texts[1].startswith("🔴 db is still DOWN (since ")
    assert loop.transport.stats()["alerts_deduplicated"] == 2


def test_a_silenced_service_posts_nothing(
    serve: type[Server], make_loop: MakeLoop, redis_client: redis.Redis
) -> None:
    server = serve(Reply(200))
    loop = make_loop(server)
    SilenceStore.from_transport(loop.transport).add("d*", T0 + 7200)
    push(loop.transport, down(), down("api"))
    cycle(loop)

    assert [body["text"] for body in posted(server)] == ["🔴 api is DOWN: connection refused"]
    assert loop.transport.stats()["alerts_silenced"] == 1


def test_alerts_read_together_are_posted_as_one_grouped_notification(
    serve: type[Server], make_loop: MakeLoop
) -> None:
    server = serve(Reply(200))
    loop = make_loop(server)
    push(loop.transport, down("db"), down("api"), down("cache"))
    cycle(loop)

    [body] = posted(server)
    assert body["text"].startswith("🔴 3 services DOWN: db (connection refused); api")


def test_429_is_a_deferral_at_retry_after_that_uses_no_attempt(
    serve: type[Server], make_loop: MakeLoop, clock: Clock, redis_client: redis.Redis
) -> None:
    server = serve(Reply(429, {"Retry-After": "30"}), Reply(200))
    loop = make_loop(server, max_attempts=1)  # one failed send would dead-letter it: a deferral is not one
    push(loop.transport, down())
    cycle(loop)
    [(_, due)] = outbox(redis_client, loop.transport)
    assert due == T0 + 30

    clock.now = T0 + 29
    assert loop.deliver_due() == 0  # not due yet
    clock.now = T0 + 30
    assert loop.deliver_due() == 1

    assert len(server.received) == 2
    assert outbox(redis_client, loop.transport) == []
    assert loop.transport.stats()["sent:hook"] == 1 and loop.transport.stats()["deferred:hook"] == 1


def test_5xx_is_retried_with_capped_backoff_then_dead_lettered_with_the_last_error(
    serve: type[Server], make_loop: MakeLoop, clock: Clock, redis_client: redis.Redis
) -> None:
    server = serve(Reply(503))
    loop = make_loop(server, max_attempts=3)  # retry delays: 5-10 s, then 10-20 s (base 10, cap 20)
    push(loop.transport, down())
    cycle(loop)
    [(_, first_due)] = outbox(redis_client, loop.transport)
    clock.now = first_due
    loop.deliver_due()
    [(_, second_due)] = outbox(redis_client, loop.transport)
    clock.now = second_due
    loop.deliver_due()

    assert 5 <= first_due - T0 <= 10
    assert 10 <= second_due - first_due <= 20
    assert len(server.received) == 3
    assert outbox(redis_client, loop.transport) == []
    [letter] = DeadLetterStore.from_transport(loop.transport).list()
    assert (letter.reason, letter.transport) == ("notify_failed", "outbox")
    assert "gave up after 3 attempts" in letter.detail and "503" in letter.detail


@pytest.mark.parametrize(
    "raw",
    [
        b'{"service":"db","status":"DOWN","timestamp":1642234567}',
        b'{"service":"db","status":"DOWN","message":"","timestamp":1642234567}',  # notified before
        b'{"service":"db","status":"DOWN","message":"  ","timestamp":1642234567}',
    ],
)
def test_an_alert_without_a_message_is_dead_lettered_and_acknowledged(
    serve: type[Server], make_loop: MakeLoop, raw: bytes
) -> None:
    server = serve(Reply(200))
    loop = make_loop(server)
    push(loop.transport, raw)
    cycle(loop)

    [letter] = DeadLetterStore.from_transport(loop.transport).list()
    assert letter.reason == "missing_message"
    assert server.received == []
    assert sum(loop.transport.pending().values()) == 0


def test_an_oversize_alert_is_dead_lettered_by_redis_and_counted_while_the_others_are_notified(
    serve: type[Server], make_loop: MakeLoop
) -> None:
    server = serve(Reply(200))
    loop = make_loop(server)
    huge = b'{"service":"db","status":"DOWN","message":"' + b"x" * 5_000_000 + b'"}'
    push(loop.transport, huge, down("api"))
    cycle(loop)

    [letter] = DeadLetterStore.from_transport(loop.transport).list()
    assert (letter.reason, letter.raw_size, letter.truncated) == ("oversize", len(huge), True)
    assert loop.totals.dead_lettered == 1
    assert [alert["service"] for body in posted(server) for alert in body["alerts"]] == ["api"]  # type: ignore[attr-defined]
    assert sum(loop.transport.pending().values()) == 0


def test_two_competing_consumers_post_each_notification_exactly_once(
    serve: type[Server], make_loop: MakeLoop
) -> None:
    server = serve(Reply(200))
    first, second = make_loop(server, name="n1"), make_loop(server, name="n2")
    push(first.transport, *(down(f"svc-{i}") for i in range(20)))
    while first.intake(0.0) + second.intake(0.0):
        pass
    rounds = [threading.Thread(target=loop.deliver_due) for loop in (first, second, first, second)]
    for thread in rounds:
        thread.start()
    for thread in rounds:
        thread.join()

    keys = [request.headers["Idempotency-Key"] for request in server.received]
    assert len(keys) == len(set(keys)) == 4  # 20 alerts read 5 at a time: four grouped notifications
    assert first.deliver_due() + second.deliver_due() == 0


class StuckNotifier:
    """Sends nothing until released, then fails: a consumer that died in the middle of a send."""

    name = HOOK

    def __init__(self) -> None:
        self.sending = threading.Event()
        self.release = threading.Event()

    def send(self, notification: Notification) -> None:
        self.sending.set()
        self.release.wait(30)
        raise NotifyTransientError("it never came back")

    def close(self) -> None:
        pass


def test_a_send_stuck_in_a_dead_consumer_is_made_by_another_once_its_lease_ends(
    serve: type[Server], make_loop: MakeLoop, clock: Clock, redis_client: redis.Redis
) -> None:
    server = serve(Reply(200))
    stuck = StuckNotifier()
    dead, alive = make_loop(server, name="dead", notifier=stuck), make_loop(server, name="alive")
    push(dead.transport, down())
    dead.intake(0.0)
    dying = threading.Thread(target=dead.deliver_due)
    dying.start()
    assert stuck.sending.wait(10)

    assert alive.deliver_due() == 0  # leased to the other consumer: not taken while its lease runs
    clock.now = T0 + 61
    assert alive.deliver_due() == 1
    stuck.release.set()  # the dead one wakes up and schedules a retry of what is already sent ...
    dying.join()
    clock.now = T0 + 3600
    alive.deliver_due()

    assert len(server.received) == 1  # ... which the sent mark turns into nothing
    assert outbox(redis_client, alive.transport) == []


def test_alerts_read_by_a_notify_consumer_that_died_are_taken_over_and_notified(
    serve: type[Server], make_loop: MakeLoop, clock: Clock
) -> None:
    server = serve(Reply(200))
    dead, alive = make_loop(server, name="dead"), make_loop(server, name="alive")
    push(dead.transport, down())
    assert len(dead.transport.fetch("dead", 10, 0)) == 1  # read, then it died before anything else

    deadline = time.monotonic() + 10
    while not server.received and time.monotonic() < deadline:  # once idle (streams) / unbeaten (lists)
        clock.now += 1.0  # a take-over is looked for once a second of the loop's clock
        cycle(alive)
        time.sleep(0.05)

    assert [orjson.loads(r.body)["text"] for r in server.received] == ["🔴 db is DOWN: connection refused"]
    assert sum(alive.transport.pending().values()) == 0


def test_a_dead_lettered_notification_replays_into_the_outbox_with_a_fresh_budget(
    serve: type[Server], make_loop: MakeLoop, clock: Clock, redis_client: redis.Redis
) -> None:
    failing = serve(Reply(503))
    loop = make_loop(failing, max_attempts=1)
    push(loop.transport, down())
    cycle(loop)  # one failed send: dead-lettered
    store = DeadLetterStore.from_transport(loop.transport)
    [letter] = store.list()
    assert outbox(redis_client, loop.transport) == []  # the emptied outbox key is gone from Redis

    result = store.replay([letter.id])

    assert result.replayed == 1 and store.list() == []
    [(raw, _)] = outbox(redis_client, loop.transport)
    assert orjson.loads(raw)["attempt"] == 0
    assert redis_client.type(loop.transport.keys.outbox()) == b"zset"  # not a new stream in its place
    working = serve(Reply(200))
    fixed = make_loop(working, name="n2")
    clock.now = time.time() + 1  # a replayed item is due at once, by Redis' clock
    fixed.deliver_due()
    assert [orjson.loads(r.body)["text"] for r in working.received] == ["🔴 db is DOWN: connection refused"]


def test_alerts_arriving_within_the_group_wait_become_one_notification(
    serve: type[Server], make_loop: MakeLoop, new_transport: Callable[[], Transport]
) -> None:
    server = serve(Reply(200))
    loop = make_loop(server, group_wait_s=1.5)
    producer = new_transport()
    push(producer, down("db"))
    reading = threading.Thread(target=loop.intake, args=(1.0,))
    reading.start()
    deadline = time.monotonic() + 10
    while not loop.transport.pending() and time.monotonic() < deadline:  # until it holds the first alert
        time.sleep(0.01)
    push(producer, down("api"))  # a second later in real life: the same outage
    reading.join()
    loop.deliver_due()

    [body] = posted(server)
    assert body["text"] == "🔴 2 services DOWN: db (connection refused); api (connection refused)"


# --- one alert can never crash or wedge notify (issue 10, section 3) ----------------------------------------


def letters(loop: NotifyLoop) -> list[tuple[str, str]]:
    return [
        (letter.reason, letter.detail) for letter in DeadLetterStore.from_transport(loop.transport).list()
    ]


def deep_alert(depth: int) -> bytes:
    nested = b"[" * depth + b"]" * depth
    return b'{"service":"deep","status":"DOWN","message":"x","timestamp":1642234567,"extra":' + nested + b"}"


def test_an_alert_nested_300_deep_is_dead_lettered_and_its_batch_mates_notified(
    serve: type[Server], make_loop: MakeLoop
) -> None:
    # notify crash-looped on it: decoded without a nesting cap, then orjson refused to write it to the outbox
    server = serve(Reply(200))
    loop = make_loop(server)
    push(loop.transport, deep_alert(300), down("api"), deep_alert(127))  # 1 + 127 levels: the cap, kept

    cycle(loop)

    assert [(reason, "nested deeper than 128" in detail) for reason, detail in letters(loop)] == [
        ("malformed_json", True)
    ]
    [body] = posted(server)
    assert body["text"].startswith("🔴 2 services DOWN: api (connection refused); deep (x)")
    assert sum(loop.transport.pending().values()) == 0


@pytest.mark.parametrize("timestamp", [b"1e300", b"-1e18", b'"0001-01-01T00:00:00+14:00"', b"-1"])
def test_an_alert_time_out_of_range_is_dead_lettered_and_never_stored_in_a_state(
    serve: type[Server], make_loop: MakeLoop, redis_client: redis.Redis, timestamp: bytes
) -> None:
    # Stored as a service's "since", it crashed every later "still DOWN" render
    server = serve(Reply(200))
    loop = make_loop(server)
    push(loop.transport, b'{"service":"db","status":"DOWN","message":"x","timestamp":' + timestamp + b"}")

    cycle(loop)

    [(reason, detail)] = letters(loop)
    assert reason == "invalid_field" and "out of range" in detail
    assert redis_client.hgetall(loop.transport.keys.alert_states()) == {}
    assert server.received == []


def test_an_alert_time_in_milliseconds_is_read_as_such_and_renders_in_a_repeat(
    serve: type[Server], make_loop: MakeLoop, clock: Clock
) -> None:
    # The 1642234567000: milliseconds, by magnitude (it was read as seconds, the year 53,000)
    server = serve(Reply(200))
    loop = make_loop(server)
    push(loop.transport, b'{"service":"db","status":"DOWN","message":"x","timestamp":1642234567000}')
    cycle(loop)
    clock.now = T0 + 3600  # the repeat interval
    push(loop.transport, down(at=clock.now))

    cycle(loop)

    assert [body["text"] for body in posted(server)] == [
        "🔴 db is DOWN: x",
        "🔴 db is still DOWN (since 2022-01-15 08:16 UTC): connection refused",
    ]


@pytest.mark.parametrize(
    ("stored", "text"),
    [  # what an older version could have stored, or anything else found in the states hash
        (b'{"status":"DOWN","since":1e300,"notified":"DOWN","notified_at":0}', "🔴 db is still DOWN: x"),
        (
            b'{"status":"DOWN","since":1642234567000,"notified":"DOWN","notified_at":0}',
            "🔴 db is still DOWN: x",
        ),
        (b'{"status":"DOWN","since":-1e18,"notified":"DOWN","notified_at":0}', "🔴 db is still DOWN: x"),
        (b'{"status":"DOWN","since":null,"notified":"DOWN"}', "🔴 db is DOWN: x"),
        (b'{"status":"SIDEWAYS","since":0}', "🔴 db is DOWN: x"),
        (b"not json", "🔴 db is DOWN: x"),
    ],
)
def test_a_bad_stored_state_never_crashes_the_render(
    serve: type[Server], make_loop: MakeLoop, redis_client: redis.Redis, stored: bytes, text: str
) -> None:
    server = serve(Reply(200))
    loop = make_loop(server)
    redis_client.hset(loop.transport.keys.alert_states(), "db", stored)
    push(loop.transport, b'{"service":"db","status":"DOWN","message":"x","timestamp":1642234567}')

    cycle(loop)

    assert [body["text"] for body in posted(server)] == [text]  # a state it cannot use is not known
    assert letters(loop) == []
    assert sum(loop.transport.pending().values()) == 0


def test_an_alert_delivered_more_than_max_deliveries_times_is_dead_lettered(
    serve: type[Server], make_loop: MakeLoop, new_transport: Callable[[], Transport]
) -> None:
    # Given an alert that every notify consumer took and died on (it is handed back again and again)
    server = serve(Reply(200))
    loop = make_loop(server, max_deliveries=3)
    push(loop.transport, down())
    taker = new_transport()
    assert len(taker.fetch("n1", 10, 0)) == 1
    for _ in range(3):  # each restart of n1 recovered it and crashed: one delivery more each time
        assert len(taker.recover("n1", 10)) == 1

    # When the consumer starts again
    cycle(loop)

    # Then it is dead-lettered, not taken once more, and acknowledged
    [(reason, detail)] = letters(loop)
    assert reason == "max_deliveries" and "delivered 5 times" in detail
    assert server.received == []
    assert sum(loop.transport.pending().values()) == 0


def test_an_outbox_item_that_cannot_be_read_is_dead_lettered_and_delivery_goes_on(
    serve: type[Server], make_loop: MakeLoop, redis_client: redis.Redis
) -> None:
    server = serve(Reply(200))
    loop = make_loop(server)
    redis_client.zadd(loop.transport.keys.outbox(), {b"left by an older version": 0, b'{"alerts":[{}]}': 0})
    push(loop.transport, down())

    cycle(loop)

    assert [reason for reason, _ in letters(loop)] == ["unreadable_entry", "unreadable_entry"]
    assert [body["text"] for body in posted(server)] == ["🔴 db is DOWN: connection refused"]
    assert outbox(redis_client, loop.transport) == []


@pytest.mark.parametrize("step", ["decode_alert", "group"])
def test_any_error_in_one_alerts_decode_or_render_costs_that_alert_only(
    serve: type[Server], make_loop: MakeLoop, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    # Given a bug in decoding or rendering that only one alert triggers
    real = getattr(notify_module, step)

    def buggy(*args: Any, **kwargs: Any) -> Any:
        if "buggy" in repr(args):
            raise ZeroDivisionError("a bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(notify_module, step, buggy)
    server = serve(Reply(200))
    loop = make_loop(server)
    push(loop.transport, down("db"), down("buggy"), down("api"))

    cycle(loop)

    assert letters(loop) == [
        (f"{'decode' if step == 'decode_alert' else 'render'}_crash", "ZeroDivisionError: a bug")
    ]
    [body] = posted(server)
    assert body["text"] == "🔴 2 services DOWN: db (connection refused); api (connection refused)"
    assert sum(loop.transport.pending().values()) == 0
