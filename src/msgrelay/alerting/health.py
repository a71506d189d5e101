"""Health checks and the state machine of the service monitor (issue 5).

A :class:`Check` probes one service and never raises for a failing service: whatever goes wrong at the target
becomes a :class:`ProbeResult` with ``ok=False`` and one short human line in ``detail``. A
:class:`ServiceTracker` damps flapping and turns probe results into an :class:`Alert` only on a state change.
A :class:`Monitor` runs the checks that are due, concurrently, and returns those alerts; ``msgrelay monitor``
pushes them into Redis.

Nothing here prints a password: URLs in details go through :func:`msgrelay.config.mask_url`, and a secret
that an underlying library puts in its error message is scrubbed as well.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shlex
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import httpx
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from msgrelay.alerting.model import Alert, Status
from msgrelay.alerting.settings import CheckSettings
from msgrelay.errors import BrokerError, ConfigError
from msgrelay.urls import mask_url

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
"""An HTTP body is read up to this size to look for ``body_contains`` (a health page is small)."""
KILL_GRACE_S = 2.0
"""How long a killed command's process group gets to go away before we stop waiting for its output."""
PROBE_GRACE_S = 3.0
"""The monitor waits a check's timeout plus this before it counts a probe that has not returned as failed."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe of one service: up or not, one short human line saying why, how long the probe took."""

    ok: bool
    detail: str
    duration_s: float


class Check(Protocol):
    """A health check of one service. ``probe`` never raises for a failing service."""

    service: str

    def probe(self) -> ProbeResult: ...


def _seconds(value: float) -> str:
    """``2.0`` -> ``"2.0"``, ``0.25`` -> ``"0.25"``: timeouts as the user wrote them, without float noise."""
    return f"{value:g}" if value != int(value) else f"{value:.1f}"


def _scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***`` (libraries may echo what they were given)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (httpx wraps the socket and ssl errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _timed(probe: Callable[[], tuple[bool, str]]) -> ProbeResult:
    started = time.monotonic()
    ok, detail = probe()
    return ProbeResult(ok, detail, time.monotonic() - started)


# --- HTTP(S) ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class HttpCheck:
    """Up when ``method url`` answers a status in ``expect_status`` (and a body containing ``body_contains``)
    within ``timeout_s``. Redirects are not followed: a 3xx is an answer like any other."""

    service: str
    url: str
    expect_status: set[int] | range = field(default_factory=lambda: range(200, 400))
    body_contains: str | None = None
    timeout_s: float = 5.0
    method: str = "GET"

    def probe(self) -> ProbeResult:
        return _timed(self._probe)

    def _probe(self) -> tuple[bool, str]:
        shown = mask_url(self.url)
        started = time.monotonic()
        try:
            with (
                httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client,
                client.stream(self.method, self.url) as response,
            ):
                return self._judge(response, started, shown)
        except httpx.TimeoutException:
            return False, f"timed out after {_seconds(self.timeout_s)} s waiting for {shown}"
        except (httpx.HTTPError, OSError, ValueError) as exc:
            # ValueError: httpx refuses some malformed URLs with it (invalid port, bad characters).
            return False, self._describe(exc, shown)

    def _judge(self, response: httpx.Response, started: float, shown: str) -> tuple[bool, str]:
        answered = f"HTTP {response.status_code} from {shown}"
        if response.status_code not in self.expect_status:
            return False, answered
        if self.body_contains is None:
            return True, answered
        body = self._read_body(response, started)
        if body is None:
            return False, f"timed out after {_seconds(self.timeout_s)} s reading the body of {shown}"
        if self.body_contains.encode() not in body:
            return False, f"{answered}: body does not contain {self.body_contains!r}"
        return True, answered

    def _read_body(self, response: httpx.Response, started: float) -> bytes | None:
        """The body up to MAX_BODY_BYTES, or None when the whole probe outlives ``timeout_s`` (httpx's timeout
        is per read, so a server trickling bytes would otherwise hold the probe forever)."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            if time.monotonic() - started > self.timeout_s:
                return None
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_BODY_BYTES:
                break
        return b"".join(chunks)

    def _secrets(self) -> list[str]:
        parts = urlsplit(self.url)
        return [parts.password or "", *parse_qs(parts.query).get("password", [])]

    def _describe(self, exc: BaseException, shown: str) -> str:
        for cause in _causes(exc):
            if isinstance(cause, ssl.SSLCertVerificationError):
                reason = cause.verify_message or cause.reason or "verification failed"
                return f"TLS certificate of {shown} not accepted: {reason}"
            if isinstance(cause, ConnectionRefusedError):
                return f"connection refused to {shown}"
            if isinstance(cause, socket.gaierror):
                return f"cannot resolve the host of {shown}: {cause.strerror}"
        if isinstance(exc, httpx.RemoteProtocolError):
            return f"{shown} closed the connection or answered garbage: {_scrub(str(exc), self._secrets())}"
        message = _scrub(str(exc), self._secrets()) or type(exc).__name__
        return f"cannot reach {shown}: {_first_line(message)}"


# --- TCP -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class TcpCheck:
    """Up when a TCP connection to ``host:port`` is accepted within ``timeout_s`` (then closed at once)."""

    service: str
    host: str
    port: int
    timeout_s: float = 5.0

    def probe(self) -> ProbeResult:
        return _timed(self._probe)

    def _probe(self) -> tuple[bool, str]:
        target = f"{self.host}:{self.port}"
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout_s):
                return True, f"connected to {target}"
        except ConnectionRefusedError:
            return False, f"connection refused to {target}"
        except TimeoutError:
            return False, f"timed out after {_seconds(self.timeout_s)} s connecting to {target}"
        except socket.gaierror as exc:
            return False, f"cannot resolve {self.host}: {exc.strerror}"
        except (OSError, OverflowError) as exc:
            # OverflowError: a port outside 0..65535 given in code rather than through CheckSettings.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return False, f"cannot connect to {target}: {reason}"


# --- Redis PING ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RedisPingCheck:
    """Up when the Redis server at ``url`` answers ``PING`` with ``PONG`` within ``timeout_s``.

    Every probe opens a fresh connection, without redis-py's retries: a failure is seen at once, and one
    probe never takes more than about ``timeout_s`` to connect plus ``timeout_s`` to answer."""

    service: str
    url: str
    timeout_s: float = 5.0

    def probe(self) -> ProbeResult:
        return _timed(self._probe)

    def _probe(self) -> tuple[bool, str]:
        shown = mask_url(self.url)
        client: redis.Redis | None = None
        try:
            client = redis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                single_connection_client=True,
            )
            # redis-py turns a PONG reply into True; anything else is a server that is not well.
            if client.ping() is not True:
                return False, f"no PONG from {shown}"
            return True, f"PONG from {shown}"
        except (redis.RedisError, OSError, ValueError) as exc:
            # ValueError: redis-py refuses a URL it cannot parse with it.
            return False, self._describe(exc, shown)
        finally:
            if client is not None:
                client.close()

    def _describe(self, exc: BaseException, shown: str) -> str:
        if isinstance(exc, redis.AuthenticationError):
            return f"authentication failed at {shown}: {self._clean(exc)}"
        if isinstance(exc, redis.TimeoutError):
            return f"timed out after {_seconds(self.timeout_s)} s waiting for {shown}"
        if isinstance(exc, redis.ConnectionError):
            refused = any(isinstance(cause, ConnectionRefusedError) for cause in _causes(exc))
            if refused or "refused" in str(exc).lower():
                return f"connection refused to {shown}"
            return f"cannot reach {shown}: {self._clean(exc)}"
        return f"{shown}: {self._clean(exc)}"

    def _clean(self, exc: BaseException) -> str:
        parts = urlsplit(self.url)
        secrets = [parts.password or "", *parse_qs(parts.query).get("password", [])]
        return _first_line(_scrub(str(exc), secrets)) or type(exc).__name__


# --- command ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class CommandCheck:
    """Up when ``command`` exits with status 0 within ``timeout_s``.

    A string runs through ``/bin/sh -c``; a list runs without a shell. The command gets its own process group,
    so when it outlives its timeout the whole group (the shell and whatever it started) is killed."""

    service: str
    command: str | list[str]
    timeout_s: float = 5.0

    def probe(self) -> ProbeResult:
        return _timed(self._probe)

    def _argv(self) -> list[str]:
        return ["/bin/sh", "-c", self.command] if isinstance(self.command, str) else list(self.command)

    def _shown(self) -> str:
        return self.command if isinstance(self.command, str) else shlex.join(self.command)

    def _probe(self) -> tuple[bool, str]:
        try:
            process = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            return False, f"cannot run {self._shown()}: {exc.strerror or exc}"
        try:
            stdout, stderr = process.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self._kill_group(process)
            return False, f"timed out after {_seconds(self.timeout_s)} s (killed): {self._shown()}"
        if process.returncode == 0:
            return True, "exit status 0"
        if process.returncode < 0:
            return False, f"killed by {signal.Signals(-process.returncode).name}: {self._shown()}"
        said = _first_line((stderr or stdout).decode(errors="replace"))
        return False, f"exit status {process.returncode}" + (f": {said}" if said else "")

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):  # it ended between the timeout and the kill
            os.killpg(process.pid, signal.SIGKILL)
        try:
            process.communicate(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            # A descendant left our process group and still holds the pipes: stop reading, reap the child.
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
            process.wait()


def build_check(settings: CheckSettings) -> Check:
    """The check ``settings`` describe."""
    # The validator guarantees the fields of the kind are set; the asserts tell mypy so.
    if settings.kind == "http":
        assert settings.url is not None
        status: set[int] | range = (
            set(settings.expect_status) if settings.expect_status is not None else range(200, 400)
        )
        return HttpCheck(
            settings.service,
            settings.url,
            expect_status=status,
            body_contains=settings.body_contains,
            timeout_s=settings.timeout_s,
            method=settings.method.upper(),
        )
    if settings.kind == "tcp":
        assert settings.host is not None and settings.port is not None
        return TcpCheck(settings.service, settings.host, settings.port, settings.timeout_s)
    if settings.kind == "redis":
        assert settings.url is not None
        return RedisPingCheck(settings.service, settings.url, settings.timeout_s)
    assert settings.command is not None
    return CommandCheck(settings.service, settings.command, settings.timeout_s)


# --- state machine ---------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``192`` -> ``"3m12s"``; ``3725`` -> ``"1h02m05s"``; ``90061`` -> ``"1d1h01m"``; ``7`` -> ``"7s"``."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ServiceTracker:
    """The state of one service, with flap damping.

    A service starts unknown. UP -> DOWN (or unknown -> DOWN: a service already down when the monitor starts
    is reported) after ``failures_before_down`` consecutive failures; DOWN -> UP after ``successes_before_up``
    consecutive successes; unknown -> UP on the first success, with an UP alert: a service that recovered
    while the monitor was stopped gets its resolve notice that way, and for one that was never notified down
    the notify loop has nothing to resolve and stays quiet. Only those changes return an :class:`Alert`."""

    def __init__(self, service: str, failures_before_down: int = 3, successes_before_up: int = 1) -> None:
        if failures_before_down < 1 or successes_before_up < 1:
            raise ValueError("failures_before_down and successes_before_up must be at least 1")
        self.service = service
        self.failures_before_down = failures_before_down
        self.successes_before_up = successes_before_up
        self.status: Status | None = None
        """None while unknown."""
        self.failures = 0
        self.successes = 0
        self._failing_since: float | None = None
        self._down_since: float | None = None

    def observe(self, result: ProbeResult, now: float, *, timestamp: float | None = None) -> Alert | None:
        """Feed one probe result. ``now`` is a monotonic time (durations); ``timestamp`` is the alert's
        wall-clock time in epoch seconds (default: now by ``time.time()``)."""
        if result.ok:
            self.failures, self._failing_since = 0, None
            self.successes += 1
            if self.status is None:
                self.status = Status.UP
                return self._alert(Status.UP, "up", result, timestamp, None)
            if self.status is Status.DOWN and self.successes >= self.successes_before_up:
                down_for = now - (self._down_since if self._down_since is not None else now)
                self.status, self._down_since = Status.UP, None
                return self._alert(
                    Status.UP, f"recovered after {format_duration(down_for)}", result, timestamp, down_for
                )
            return None
        self.successes = 0
        self.failures += 1
        if self._failing_since is None:
            self._failing_since = now
        if self.status is not Status.DOWN and self.failures >= self.failures_before_down:
            # The outage began with the first failure of the streak, not when damping let us say so.
            self.status, self._down_since = Status.DOWN, self._failing_since
            return self._alert(Status.DOWN, result.detail, result, timestamp, None)
        return None

    def _alert(
        self,
        status: Status,
        message: str,
        result: ProbeResult,
        timestamp: float | None,
        down_for: float | None,
    ) -> Alert:
        fields: dict[str, object] = {"detail": result.detail, "probe_duration_s": round(result.duration_s, 3)}
        if down_for is not None:
            fields["down_for_s"] = round(down_for, 3)
        return Alert(
            self.service, status, message, time.time() if timestamp is None else timestamp, fields=fields
        )


# --- monitor ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Watched:
    check: Check
    settings: CheckSettings
    tracker: ServiceTracker
    next_due: float = float("-inf")
    running: concurrent.futures.Future[ProbeResult] | None = None
    """A probe that outlived the monitor's wait; the check is not probed again until it returns."""


class Monitor:
    """Runs the checks that are due and returns the alerts of state changes.

    Checks run concurrently in a thread pool (one thread per check), so a hanging check delays a round by at
    most its own timeout, never the other checks' results by more than that. A probe that does not return
    even within its timeout plus a grace counts as a failure; that check is not probed again until the
    stuck probe returns."""

    def __init__(
        self,
        checks_with_settings: Iterable[tuple[Check, CheckSettings]],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._watched: list[_Watched] = []
        for check, settings in checks_with_settings:
            if any(w.check.service == check.service for w in self._watched):
                raise ConfigError(
                    f"service {check.service!r} is monitored twice: service names must be unique"
                )
            tracker = ServiceTracker(
                check.service, settings.failures_before_down, settings.successes_before_up
            )
            self._watched.append(_Watched(check, settings, tracker))
        self._clock = clock
        self._wall_clock = wall_clock
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, len(self._watched)), thread_name_prefix="msgrelay-check"
        )

    @classmethod
    def from_settings(cls, settings: Iterable[CheckSettings], **kwargs: Callable[[], float]) -> Monitor:
        return cls(((build_check(s), s) for s in settings), **kwargs)

    def trackers(self) -> dict[str, ServiceTracker]:
        """Each service's tracker, by name (its current status, for a status display)."""
        return {w.check.service: w.tracker for w in self._watched}

    def next_due(self) -> float:
        """The clock time at which the next check is due (``-inf`` before the first round)."""
        return min((w.next_due for w in self._watched), default=float("inf"))

    def run_once(self, now: float | None = None) -> list[Alert]:
        """Probe every check due at ``now`` (the monitor's clock when None), concurrently; return the alerts
        of the state changes, in the order the checks were given."""
        now = self._clock() if now is None else now
        due = []
        for watched in self._watched:
            if watched.next_due > now:
                continue
            watched.next_due = now + watched.settings.interval_s
            # A probe still stuck from an earlier round was already counted as failed; skip this round.
            if watched.running is None or watched.running.done():
                watched.running = self._pool.submit(watched.check.probe)
                due.append(watched)
        alerts: list[Alert] = []
        for watched, result in zip(due, self._results(due), strict=True):
            # The round's time, not the probe's end: outage durations then count in whole intervals.
            alert = watched.tracker.observe(result, now, timestamp=self._wall_clock())
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _results(self, due: list[_Watched]) -> list[ProbeResult]:
        started = self._clock()
        results = []
        for watched in due:
            assert watched.running is not None
            # Each probe gets its own deadline from the round's start: waiting on one never eats another's.
            remaining = started + watched.settings.timeout_s + PROBE_GRACE_S - self._clock()
            results.append(self._result_of(watched, watched.running, max(0.0, remaining)))
        return results

    def _result_of(
        self, watched: _Watched, future: concurrent.futures.Future[ProbeResult], wait_s: float
    ) -> ProbeResult:
        try:
            result = future.result(timeout=wait_s)
        except concurrent.futures.TimeoutError:
            limit = watched.settings.timeout_s + PROBE_GRACE_S
            return ProbeResult(False, f"check did not return within {_seconds(limit)} s", limit)
        except Exception as exc:
            # A check must not raise for a failing service; if one does, that is still the service's failure
            # as far as anyone can tell, and the monitor keeps going.
            log.exception("check of %s raised", watched.check.service)
            return ProbeResult(False, f"check failed: {type(exc).__name__}: {_first_line(str(exc))}", 0.0)
        watched.running = None
        return result

    def run(self, push: Callable[[Alert], None], stop: threading.Event, *, retry_push_s: float = 1.0) -> None:
        """Run rounds until ``stop`` is set, pushing each alert. An alert whose push raises is kept and pushed
        again (in order, before newer ones) every ``retry_push_s`` until it goes through: never dropped."""
        unpushed: list[Alert] = []
        while not stop.is_set():
            unpushed.extend(self.run_once())
            unpushed = self._push_all(push, unpushed)
            wait = self.next_due() - self._clock()
            if unpushed:
                wait = min(wait, retry_push_s)
            stop.wait(max(0.0, wait))
        self.close()

    @staticmethod
    def _push_all(push: Callable[[Alert], None], alerts: list[Alert]) -> list[Alert]:
        for index, alert in enumerate(alerts):
            try:
                push(alert)
            except BrokerError:
                return alerts[index:]  # Redis cannot take it now: the pusher says why, once per outage
            except Exception:
                log.exception("cannot push the %s alert of %s; will try again", alert.status, alert.service)
                return alerts[index:]
        return []

    def close(self) -> None:
        """Stop the thread pool without waiting for a stuck probe (its thread ends when the probe does)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
