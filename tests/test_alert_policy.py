"""alerting.policy: when an alert is notified, repeated, resolved or kept quiet, and to whom it goes."""

from __future__ import annotations

from msgrelay.alerting.model import Alert, NotificationKind, Status
from msgrelay.alerting.policy import (
    MAX_TEXT,
    Route,
    ServiceState,
    Silence,
    Verdict,
    group,
    judge,
    notification_key,
    route,
)

REPEAT_S = 3600.0
T0 = 1_764_000_000.0


def down(service: str = "db", at: float = T0, message: str = "connection refused") -> Alert:
    return Alert(service, Status.DOWN, message, at)


def up(service: str = "db", at: float = T0, message: str = "ok") -> Alert:
    return Alert(service, Status.UP, message, at)


def verdicts(alerts: list[tuple[Alert, float]], silences: list[Silence] | None = None) -> list[Verdict]:
    """Feed alerts (with the time each is read) through one service state; the verdicts in order."""
    state: ServiceState | None = None
    seen: list[Verdict] = []
    for alert, now in alerts:
        verdict, state = judge(alert, state, silences or [], now=now, repeat_interval_s=REPEAT_S)
        seen.append(verdict)
    return seen


def test_a_service_going_down_is_notified_once_then_deduplicated_within_the_repeat_interval() -> None:
    assert verdicts([(down(), T0), (down(at=T0 + 60), T0 + 60), (down(at=T0 + 600), T0 + 600)]) == [
        Verdict.FIRING,
        Verdict.DEDUPLICATED,
        Verdict.DEDUPLICATED,
    ]


def test_a_service_still_down_after_the_repeat_interval_is_notified_again_then_waits_again() -> None:
    later = T0 + REPEAT_S
    assert verdicts([(down(), T0), (down(at=later), later), (down(at=later + 60), later + 60)]) == [
        Verdict.FIRING,
        Verdict.REPEAT,
        Verdict.DEDUPLICATED,
    ]


def test_up_after_a_notified_down_resolves_it_and_an_up_with_nothing_to_resolve_is_quiet() -> None:
    assert verdicts(
        [(up(), T0), (down(at=T0 + 1), T0 + 1), (up(at=T0 + 2), T0 + 2), (up(at=T0 + 3), T0 + 3)]
    ) == [
        Verdict.DEDUPLICATED,
        Verdict.FIRING,
        Verdict.RESOLVED,
        Verdict.DEDUPLICATED,
    ]


def test_a_flapping_service_is_notified_at_every_real_change() -> None:
    changes = [down(at=T0), up(at=T0 + 1), down(at=T0 + 2), up(at=T0 + 3)]
    assert verdicts([(alert, alert.timestamp) for alert in changes]) == [
        Verdict.FIRING,
        Verdict.RESOLVED,
        Verdict.FIRING,
        Verdict.RESOLVED,
    ]


def test_a_silence_keeps_a_matching_service_quiet_until_it_expires() -> None:
    silence = Silence("s1", "pay*", until=T0 + 100)
    assert verdicts([(down("payments"), T0), (down("payments", T0 + 200), T0 + 200)], [silence]) == [
        Verdict.SILENCED,
        Verdict.FIRING,  # the silence is over and the DOWN was never notified
    ]
    assert verdicts([(down("db"), T0)], [silence]) == [Verdict.FIRING]  # other services are not covered


def test_an_up_after_a_silenced_down_has_nothing_to_resolve() -> None:
    silence = Silence("s1", "db", until=T0 + 100)
    assert verdicts([(down(), T0), (up(at=T0 + 10), T0 + 10)], [silence]) == [
        Verdict.SILENCED,
        Verdict.DEDUPLICATED,
    ]


def test_the_state_remembers_since_when_a_service_is_down() -> None:
    _, state = judge(down(at=T0), None, [], now=T0, repeat_interval_s=REPEAT_S)
    _, state = judge(down(at=T0 + 50), state, [], now=T0 + 50, repeat_interval_s=REPEAT_S)

    assert (state.status, state.since, state.notified, state.notified_at) == (
        Status.DOWN,
        T0,
        Status.DOWN,
        T0,
    )


def test_alerts_read_together_are_grouped_into_one_notification_per_kind() -> None:
    judged = [
        (Verdict.FIRING, down("db"), T0),
        (Verdict.RESOLVED, up("cache"), T0),
        (Verdict.REPEAT, down("api", message="HTTP 503"), T0 - 7200),
    ]

    firing, resolved = group(judged)

    assert (firing.kind, resolved.kind) == (NotificationKind.FIRING, NotificationKind.RESOLVED)
    assert [a.service for a in firing.alerts] == ["db", "api"]
    assert firing.text == "🔴 2 services DOWN: db (connection refused); api (HTTP 503)"
    assert resolved.text == "✅ cache is UP again: ok"


def test_a_single_repeat_says_since_when() -> None:
    [note] = group([(Verdict.REPEAT, down(), T0)])
    assert note.text == "🔴 db is still DOWN (since 2025-11-24 16:00 UTC): connection refused"


def test_notification_text_fits_a_tweet() -> None:
    [note] = group([(Verdict.FIRING, down(message="x" * 1000), T0)])
    assert len(note.text) == MAX_TEXT and note.text.endswith("…")


def test_the_notification_key_is_the_same_for_the_same_alerts_and_differs_otherwise() -> None:
    [first] = group([(Verdict.FIRING, down(), T0)])
    [again] = group([(Verdict.FIRING, down(), T0)])
    [other] = group([(Verdict.FIRING, down(at=T0 + 1), T0)])

    assert first.key == again.key == notification_key([down()], NotificationKind.FIRING)
    assert other.key != first.key


def test_routes_pick_notifiers_by_service_and_status_with_a_default() -> None:
    routes = [
        Route(("pager", "twitter"), services=("db", "payments-*"), statuses=frozenset({Status.DOWN})),
        Route(("slack",)),
    ]
    [db_down] = group([(Verdict.FIRING, down("db"), T0)])
    [db_up] = group([(Verdict.RESOLVED, up("db"), T0)])
    [web_down] = group([(Verdict.FIRING, down("web"), T0)])

    assert route(db_down, routes, ["console"]) == ["pager", "twitter", "slack"]
    assert route(db_up, routes, ["console"]) == ["slack"]
    assert route(web_down, routes[:1], ["console"]) == ["console"]
