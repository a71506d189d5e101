"""The consumer loop with a real Redis and real log files, for both transports.

Failures are injected with small sinks written here (they wrap the real LogFileSink); Redis is never faked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgrelay.config import Settings
from msgrelay.consumer import BURST_MAX_FAILURES, Backoff, BatchResult, Consumer, ConsumerHook, Totals
from msgrelay.errors import SinkError
from msgrelay.keys import Stat
from msgrelay.levels import TYPE_FILES
from msgrelay.message import Delivery, Message
from msgrelay.producer import Producer
from msgrelay.sinks import LogFileSink
from msgrelay.transport import Transport, create_transport

CONSUMER = "c1"


@pytest.fixture
def settings(make_settings: Callable[..., Settings], transport_name: str) -> Settings:
    return make_settings(
        transport_name,
        consumer={"batch_size": 5, "consumer_name": CONSUMER, "block_timeout_s": 0.1, "line_format": "json"},
    )


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Things with a ``close()`` to close after the test."""
    things: list[Any] = []
    yield things
    for thing in things:
        thing.close()


@pytest.fixture
def observer(settings: Settings, closing: list[Any]) -> Transport:
    """An independent connection to look at the queue while (or after) the consumer works."""
    transport = create_transport(settings)
    closing.append(transport)
    return transport


@pytest.fixture
def producer(settings: Settings, closing: list[Any]) -> Producer:
    producer = Producer.from_settings(settings)
    closing.append(producer)
    return producer


@pytest.fixture
def file_sink(settings: Settings, closing: list[Any]) -> LogFileSink:
    sink = LogFileSink(settings.consumer.log_dir, line_format=settings.consumer.line_format)
    closing.append(sink)
    return sink


@pytest.fixture
def make_consumer(settings: Settings, closing: list[Any]) -> Callable[..., Consumer]:
    def make(sink: Any, *hooks: ConsumerHook, consumer_settings: Settings | None = None) -> Consumer:
        chosen = consumer_settings or settings
        transport = create_transport(chosen)
        closing.append(transport)
        consumer = Consumer(
            transport, sink, chosen.consumer, max_message_bytes=chosen.queue.max_message_bytes, hooks=hooks
        )
        consumer.backoff = Backoff(base_s=0.001, cap_s=0.001)
        return consumer

    return make


def send(producer: Producer, count: int, msg_type: str = "info") -> list[str]:
    return producer.send_many([(msg_type, f"message {i}", {"n": i}) for i in range(count)])


def written_ids(settings: Settings) -> list[str]:
    """Ids in every log file, file by file, in the order they were written."""
    ids: list[str] = []
    for name in TYPE_FILES.values():
        path = Path(settings.consumer.log_dir) / name
        if path.exists():
            ids += [orjson.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]
    return ids


def file_ids(settings: Settings, msg_type: str) -> list[str]:
    path = Path(settings.consumer.log_dir) / TYPE_FILES[msg_type]
    return [orjson.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


class Recorder(ConsumerHook):
    def __init__(self) -> None:
        self.results: list[BatchResult] = []
        self.failures: list[Exception] = []

    def after_batch(self, result: BatchResult, totals: Totals) -> None:
        self.results.append(result)

    def on_failure(self, error: Exception, retry_in_s: float) -> None:
        self.failures.append(error)


class WrappingSink:
    """The real file sink behind a test double; subclasses override ``write_batch``."""

    def __init__(self, inner: LogFileSink) -> None:
        self.inner = inner

    def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes]) -> list[tuple[int, str]]:
        return self.inner.write_batch(messages, handles)

    def already_written(self, handles: Sequence[bytes]) -> set[bytes]:
        return self.inner.already_written(handles)

    def settled(self) -> None:
        self.inner.settled()

    def close(self) -> None:
        self.inner.close()


class RecordingSink(WrappingSink):
    """The real file sink, remembering each batch it was given."""

    def __init__(self, inner: LogFileSink) -> None:
        super().__init__(inner)
        self.batches: list[list[str]] = []

    def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes]) -> list[tuple[int, str]]:
        self.batches.append([m.id for m in messages])
        return super().write_batch(messages, handles)


class FlakySink(WrappingSink):
    """Fails its first ``failures`` batches after writing ``partial`` lines of each (a disk filling up)."""

    def __init__(self, inner: LogFileSink, *, failures: int, partial: int = 0) -> None:
        super().__init__(inner)
        self.failures = failures
        self.partial = partial
        self.calls = 0

    def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes]) -> list[tuple[int, str]]:
        self.calls += 1
        if self.calls > self.failures:
            return super().write_batch(messages, handles)
        super().write_batch(messages[: self.partial], handles[: self.partial])
        raise SinkError("No space left on device")


class FullErrorFileSink(WrappingSink):
    """error.log is full until ``healthy_lines`` lines of other types have been written."""

    def __init__(self, inner: LogFileSink, *, healthy_lines: int) -> None:
        super().__init__(inner)
        self.healthy_lines = healthy_lines
        self.other_lines = 0
        self.failed_writes = 0

    def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes]) -> list[tuple[int, str]]:
        if self.other_lines >= self.healthy_lines:
            return super().write_batch(messages, handles)
        healthy = [m for m in messages if m.type != "ERROR"]
        super().write_batch(healthy, [])
        self.other_lines += len(healthy)
        if len(healthy) < len(messages):
            self.failed_writes += 1
            raise SinkError("No space left on device", failed_types=frozenset({"ERROR"}))
        return []


# --- the happy path -----------------------------------------------------------------------------------


def test_burst_drains_the_queue_and_returns_correct_totals(
    settings: Settings, producer: Producer, observer: Transport, file_sink: LogFileSink, make_consumer: Any
) -> None:
    info = send(producer, 7, "info")
    errors = send(producer, 4, "critical")
    debug = send(producer, 1, "debug")
    observer.send([b"{broken json", b'{"type": "nonsense", "text": "x"}'])  # two dead letters

    totals = make_consumer(file_sink).run(burst=True)

    assert (totals.fetched, totals.written, totals.dead_lettered) == (14, 12, 2)
    assert totals.batches == 3  # 14 entries in batches of 5
    assert totals.failed_attempts == 0
    assert file_ids(settings, "INFO") == info
    assert file_ids(settings, "ERROR") == errors
    assert file_ids(settings, "DEBUG") == debug
    assert observer.backlog() == 0
    assert sum(observer.pending().values()) == 0
    assert observer.dead_letter_count() == 2
    stats = observer.stats()
    assert (stats[Stat.PROCESSED], stats[Stat.DEAD_LETTERED], stats[Stat.BATCHES]) == (12, 2, 3)
    assert (stats["processed:INFO"], stats["processed:ERROR"], stats["processed:DEBUG"]) == (7, 4, 1)


def test_burst_on_an_empty_queue_returns_at_once_with_zero_totals(
    file_sink: LogFileSink, make_consumer: Any
) -> None:
    totals = make_consumer(file_sink).run(burst=True)

    assert (totals.batches, totals.fetched, totals.written) == (0, 0, 0)


def test_batches_are_never_larger_than_batch_size(
    settings: Settings, producer: Producer, file_sink: LogFileSink, make_consumer: Any
) -> None:
    ids = send(producer, 13)
    sink = RecordingSink(file_sink)
    recorder = Recorder()

    make_consumer(sink, recorder).run(burst=True)

    assert [len(batch) for batch in sink.batches] == [5, 5, 3]
    assert [r.fetched for r in recorder.results] == [5, 5, 3]
    assert [i for batch in sink.batches for i in batch] == ids
    assert written_ids(settings) == ids


def test_a_batch_is_acknowledged_only_after_the_sink_returned(
    producer: Producer, observer: Transport, file_sink: LogFileSink, make_consumer: Any
) -> None:
    send(producer, 8)
    seen_while_writing: list[tuple[dict[str, int], int]] = []

    class InspectingSink(RecordingSink):
        def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes]) -> list[tuple[int, str]]:
            seen_while_writing.append((observer.pending(), observer.stats().get(Stat.PROCESSED, 0)))
            return super().write_batch(messages, handles)

    make_consumer(InspectingSink(file_sink)).run(burst=True)

    # while each batch was being written, it was still held by the consumer and not yet counted
    assert seen_while_writing == [({CONSUMER: 5}, 0), ({CONSUMER: 3}, 5)]


# --- failures -----------------------------------------------------------------------------------------


def test_failed_write_is_never_acknowledged_and_is_written_once_the_disk_recovers(
    settings: Settings, producer: Producer, observer: Transport, file_sink: LogFileSink, make_consumer: Any
) -> None:
    ids = send(producer, 12)
    sink = FlakySink(file_sink, failures=2, partial=2)  # two lines of the batch reach the file each time
    seen_at_failure: list[tuple[int, int]] = []

    class Watch(Recorder):
        def on_failure(self, error: Exception, retry_in_s: float) -> None:
            super().on_failure(error, retry_in_s)
            seen_at_failure.append(
                (sum(observer.pending().values()), observer.stats().get(Stat.PROCESSED, 0))
            )

    watch = Watch()
    totals = make_consumer(sink, watch).run(burst=True)

    # while the sink was failing: what was fetched stayed held (pending), nothing counted as processed
    assert len(seen_at_failure) == 2
    assert all(pending >= 5 and processed == 0 for pending, processed in seen_at_failure)
    assert all(isinstance(e, SinkError) for e in watch.failures)
    # after it recovered: every message written, none missing (the partial lines are duplicates)
    lines = written_ids(settings)
    assert set(lines) == set(ids)
    assert len(lines) == len(ids) + 4  # exactly the two partial lines of each failed attempt repeat
    assert (totals.written, totals.failed_attempts) == (12, 0)
    assert observer.stats()[Stat.PROCESSED] == 12
    assert sum(observer.pending().values()) == 0


def test_a_full_file_does_not_stop_the_other_types_and_catches_up_when_space_returns(
    settings: Settings, producer: Producer, observer: Transport, file_sink: LogFileSink, make_consumer: Any
) -> None:
    # Given: error.log cannot be written until every INFO line is written; info.log is fine
    infos = send(producer, 6, "info")
    errors = send(producer, 4, "error")
    infos += send(producer, 6, "info")
    sink = FullErrorFileSink(file_sink, healthy_lines=12)

    make_consumer(sink).run(burst=True)

    # Then: the INFO lines kept flowing while ERROR was failing (they made it healthy again) ...
    assert sink.failed_writes >= 1
    assert file_ids(settings, "INFO") == infos
    # ... and ERROR caught up, each line once, nothing left pending
    assert file_ids(settings, "ERROR") == errors
    assert observer.stats()[Stat.PROCESSED] == 16
    assert sum(observer.pending().values()) == 0


def test_burst_with_a_permanently_failing_sink_gives_up_after_max_failures(
    producer: Producer, observer: Transport, file_sink: LogFileSink, make_consumer: Any
) -> None:
    send(producer, 12)
    sink = FlakySink(file_sink, failures=10**9)
    recorder = Recorder()
    consumer = make_consumer(sink, recorder)

    with pytest.raises(SinkError):
        consumer.run(burst=True)

    assert sink.calls == BURST_MAX_FAILURES
    assert len(recorder.failures) == BURST_MAX_FAILURES  # backed off after each attempt
    assert recorder.results == []
    # nothing was lost: everything fetched is still held for the next run
    assert sum(observer.pending().values()) + (observer.backlog() or 0) == 12
    assert Stat.PROCESSED not in observer.stats()


def test_the_same_consumer_finishes_the_work_in_a_later_run_after_giving_up(
    settings: Settings, producer: Producer, observer: Transport, file_sink: LogFileSink, make_consumer: Any
) -> None:
    ids = send(producer, 12)
    with pytest.raises(SinkError):
        make_consumer(FlakySink(file_sink, failures=10**9)).run(burst=True)

    totals = make_consumer(file_sink).run(burst=True)

    assert totals.written == 12
    assert written_ids(settings) == ids
    assert sum(observer.pending().values()) == 0


def test_a_hook_that_raises_does_not_stop_the_consumer(
    settings: Settings, producer: Producer, file_sink: LogFileSink, make_consumer: Any
) -> None:
    ids = send(producer, 12)

    class Broken(ConsumerHook):
        def after_batch(self, result: BatchResult, totals: Totals) -> None:
            raise RuntimeError("metrics backend is down")

    recorder = Recorder()
    totals = make_consumer(file_sink, Broken(), recorder).run(burst=True)

    assert totals.batches == 3
    assert len(recorder.results) == 3  # hooks after the broken one still run
    assert written_ids(settings) == ids


# --- stopping and crashing ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_stop_from_a_hook_returns_after_settling_the_current_batch(
    settings: Settings, producer: Producer, observer: Transport, file_sink: LogFileSink, make_consumer: Any
) -> None:
    ids = send(producer, 12)
    consumer: Consumer

    class StopAfterFirst(ConsumerHook):
        def after_batch(self, result: BatchResult, totals: Totals) -> None:
            consumer.stop()

    consumer = make_consumer(file_sink, StopAfterFirst())
    totals = consumer.run()  # not burst: only stop() ends it

    assert consumer.stopping
    assert (totals.batches, totals.written) == (1, 5)
    assert written_ids(settings) == ids[:5]
    assert sum(observer.pending().values()) == 0  # the batch was acknowledged before returning
    assert observer.backlog() == 7  # the rest is still queued for the next run
    assert observer.stats()[Stat.PROCESSED] == 5


def test_after_a_crash_the_same_consumer_name_first_recovers_what_it_held(
    settings: Settings, producer: Producer, file_sink: LogFileSink, make_consumer: Any
) -> None:
    ids = send(producer, 8)
    crashed = create_transport(settings)
    held = crashed.fetch(CONSUMER, 3, 0)  # fetched, never written nor settled
    crashed.close()
    assert len(held) == 3
    recorder = Recorder()

    totals = make_consumer(file_sink, recorder).run(burst=True)

    assert recorder.results[0].recovered
    assert recorder.results[0].fetched == 3
    assert not any(r.recovered for r in recorder.results[1:])
    assert totals.written == 8
    assert written_ids(settings) == ids  # the held ones first, then the rest; each exactly once


def test_entries_held_by_another_consumer_name_are_not_taken(
    settings: Settings, producer: Producer, observer: Transport, file_sink: LogFileSink, make_consumer: Any
) -> None:
    ids = send(producer, 6)
    other = create_transport(settings)
    other.fetch("other-worker", 2, 0)
    other.close()

    totals = make_consumer(file_sink).run(burst=True)

    assert totals.written == 4
    assert written_ids(settings) == ids[2:]
    assert observer.pending()["other-worker"] == 2


# --- batch_wait_s -------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_batch_wait_fills_a_partial_batch_with_messages_arriving_during_the_wait(
    make_settings: Callable[..., Settings],
    transport_name: str,
    producer: Producer,
    file_sink: LogFileSink,
    make_consumer: Any,
) -> None:
    waiting = make_settings(
        transport_name,
        consumer={"batch_size": 5, "consumer_name": CONSUMER, "batch_wait_s": 10.0, "line_format": "json"},
    )
    early = send(producer, 2)
    consumer: Consumer = make_consumer(file_sink, consumer_settings=waiting)
    first_fetch_done = threading.Event()
    real_fetch = consumer.transport.fetch

    def fetch(name: str, count: int, block_s: float) -> list[Delivery]:
        result = real_fetch(name, count, block_s)
        first_fetch_done.set()
        return result

    consumer.transport.fetch = fetch  # type: ignore[method-assign,assignment]  # a probe; the fetch is real
    late: list[str] = []

    def push_late() -> None:
        first_fetch_done.wait(10)
        late.extend(send(producer, 3))

    pusher = threading.Thread(target=push_late)
    pusher.start()
    recorder = Recorder()
    consumer.hooks.append(recorder)
    try:
        totals = consumer.run(burst=True)
    finally:
        pusher.join()

    # one full batch: the two early messages plus the three that arrived while it waited
    assert [r.fetched for r in recorder.results] == [5]
    assert totals.written == 5
    assert written_ids(waiting) == early + late
