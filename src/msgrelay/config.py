"""One typed configuration: CLI flag > environment > ``msgrelay.toml`` > default.

The file has one table per section::

    [redis]
    url = "redis://:secret@localhost:6379/0"   # or host/port/db/password; rediss:// for TLS

    [queue]
    transport = "streams"                      # or "lists" (LPUSH-compatible)

    [consumer]
    batch_size = 500
    log_dir = "/var/log/myapp"

Environment variables are ``MSGRELAY_<SECTION>__<KEY>`` (``MSGRELAY_CONSUMER__BATCH_SIZE=500``), and
``MSGRELAY_CONFIG`` names the file. Any unknown key, in the file or in the environment, is an error naming it.
Units are in the names: ``_s`` seconds, ``_bytes`` bytes. Booleans are ``true`` or ``false``, nothing else
(see :mod:`msgrelay.settings_table`).

``redis.socket_timeout_s`` left unset is derived from the longest blocking read (``consumer.block_timeout_s``,
``consumer.batch_wait_s``, ``alerts.block_timeout_s``, ``alerts.group_wait_s``) plus ``BLOCK_MARGIN_S``, never
below 10 s; set explicitly, ``consume`` and ``notify`` refuse to start when it is not larger than their reads
(:meth:`Settings.check_blocking_reads`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from msgrelay.alerting.settings import CheckSettings, ConsoleSettings, NotifierSettings, notifier_name
from msgrelay.errors import ConfigError
from msgrelay.settings_table import STRICT_VALUE_ERROR, SettingsTable, did_you_mean, keys_at
from msgrelay.urls import mask_url

ENV_PREFIX = "MSGRELAY_"
CONFIG_ENV_VAR = "MSGRELAY_CONFIG"
NON_SETTING_ENV_VARS = frozenset({CONFIG_ENV_VAR, "MSGRELAY_REDIS_SERVER"})
"""MSGRELAY_* variables that are not settings (the config file; the binary of msgrelay.redis_server)."""
DEFAULT_CONFIG_FILE = Path("msgrelay.toml")
DEFAULT_SOCKET_TIMEOUT_S = 10.0
BLOCK_MARGIN_S = 5.0
"""A derived socket timeout exceeds the longest blocking read by this much: a blocked ``XREADGROUP`` or
``BLMOVE`` comes back when its block ends, plus the round trip (milliseconds, even on a loaded server)."""

_config_file: ContextVar[Path | None] = ContextVar("msgrelay_config_file", default=None)


class _Section(SettingsTable):
    """One ``[section]`` of the file."""


class RedisSettings(_Section):
    """Where Redis is. ``url`` wins over host/port/db/password when set."""

    url: str | None = None
    host: str = "localhost"
    port: int = Field(6379, ge=0, le=65535)
    db: int = Field(0, ge=0)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    socket_timeout_s: float = Field(
        DEFAULT_SOCKET_TIMEOUT_S,
        gt=0,
        description="per-command timeout; unset: the longest blocking read + 5 s, at least 10 s",
    )
    connect_timeout_s: float = Field(3.0, gt=0)
    stop_timeout_s: float = Field(
        5.0,
        gt=0,
        description="after SIGTERM/Ctrl-C, consume, notify and monitor give a stalled Redis this long, then "
        "cut their connections and exit (what was not acknowledged is delivered again)",
    )

    def effective_url(self) -> str:
        """The URL clients connect to, password included (never print it: use :func:`mask_url`)."""
        if self.url:
            return self.url
        userinfo = ""
        if self.password is not None:
            userinfo = (
                f"{quote(self.username or '', safe='')}:{quote(self.password.get_secret_value(), safe='')}@"
            )
        elif self.username:
            userinfo = f"{quote(self.username, safe='')}@"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{userinfo}{self.host}:{self.port}/{self.db}"


class QueueSettings(_Section):
    """What the messages travel through."""

    transport: Literal["streams", "lists"] = "streams"
    stream: str = Field("msgrelay:logs", min_length=1, description="stream key (streams transport)")
    group: str = Field("msgrelay", min_length=1, description="consumer group (streams transport)")
    buffer_key: str = Field("message_buffer", min_length=1, description="list key (lists transport)")
    namespace: str = Field("msgrelay", min_length=1, description="prefix of every other key msgrelay owns")
    max_message_bytes: int = Field(64 * 1024, gt=0, description="larger entries are dead-lettered")
    trim_interval_s: float = Field(
        10.0, ge=0, description="how often a consumer trims settled entries off the stream (MINID); 0 = never"
    )


class ProducerSettings(_Section):
    """``msgrelay produce``: how many generated messages, and how fast."""

    max_messages: int = Field(1000, ge=0, description="0 means no limit")
    delay_between_messages_s: float = Field(0.0, ge=0)
    rate_per_s: float | None = Field(None, gt=0, description="target rate; overrides the delay when set")
    pipeline_size: int = Field(1000, gt=0, description="messages sent per round trip")


class RotationSettings(_Section):
    """``[consumer.rotation]``: built-in rotation of the log files (off unless ``max_bytes`` or ``daily``).

    Rotated files are ``<name>.1`` (newest) .. ``<name>.<keep>``, ``.gz`` when compressed; see
    :mod:`msgrelay.sinks.rotation`.
    """

    max_bytes: int = Field(
        0, ge=0, description="rotate a file before a write would take it past this size; 0 = no size limit"
    )
    daily: bool = Field(False, description="rotate a file at its first write after midnight UTC")
    keep: int = Field(7, ge=1, description="rotated files kept per log file; older ones are deleted")
    compress: bool = Field(False, description="gzip rotated files, in the background")


class ConsumerSettings(_Section):
    """``msgrelay consume``: batching, waiting and where the log files go."""

    batch_size: int = Field(
        500, gt=0, description="most entries per batch (a batch is what is there: no waiting to fill it)"
    )
    max_batch_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        description="most bytes of entries per batch (at least one entry: a single entry up to "
        "queue.max_message_bytes may exceed it); the rest waits for the next batch. A consumer's memory "
        "grows by up to about 7 (streams) or 9 (lists) times this while it processes a batch",
    )
    batch_wait_s: float = Field(0.0, ge=0, description="extra time to wait to fill a partial batch")
    processing_delay_s: float = Field(0.0, ge=0, description="pause after each batch")
    block_timeout_s: float = Field(1.0, gt=0, description="how long one read waits for new messages")
    log_dir: Path = Path("application_logs")
    fsync: bool = Field(False, description="fsync each file after each batch, before the ack")
    line_format: Literal["text", "json"] = "text"
    consumer_name: str | None = Field(None, description="defaults to <hostname>-<pid>")
    claim_idle_s: float = Field(
        30.0,
        gt=0,
        description="entries held this long by a silent consumer are taken over by a live one "
        "(streams: XAUTOCLAIM min-idle; lists: heartbeat TTL); must exceed the longest batch",
    )
    max_deliveries: int = Field(
        5, ge=1, description="an entry delivered this many times without success is dead-lettered"
    )
    retry_backoff_s: float = Field(1.0, gt=0, description="first delay before a failed message is retried")
    retry_backoff_cap_s: float = Field(60.0, gt=0, description="longest delay between retries of a message")
    delivery: Literal["at_least_once", "effectively_once"] = Field(
        "at_least_once",
        description="effectively_once: a killed consumer leaves no duplicate line in the log files "
        "(batch offsets journaled in Redis before each write)",
    )
    unsafe_redis: Literal["warn", "refuse"] = Field(
        "warn",
        description="what to do on start when Redis may evict queue data or persists nothing",
    )
    forget_after_s: float = Field(
        24 * 3600.0,
        ge=0,
        description="a consumer that holds nothing and has been gone this long leaves the consumer group "
        "and stats; 0 = never. Must exceed claim_idle_s",
    )
    rotation: RotationSettings = RotationSettings()

    @model_validator(mode="after")
    def _forget_after_claim(self) -> Self:
        if 0 < self.forget_after_s <= self.claim_idle_s:
            raise ValueError(
                f"consumer.forget_after_s ({self.forget_after_s:g}) must exceed consumer.claim_idle_s "
                f"({self.claim_idle_s:g}), or 0 to never forget: a consumer is only gone once it is silent "
                "longer than a live one ever is"
            )
        return self


class DeadLetterSettings(_Section):
    """The dead-letter stream ``<namespace>:dlq``: how long entries are kept."""

    retention_s: float = Field(
        14 * 24 * 3600.0, ge=0, description="dead letters older than this are trimmed; 0 = keep forever"
    )
    max_entries: int = Field(0, ge=0, description="keep at most this many dead letters; 0 = no limit")


class RouteSettings(_Section):
    """``[[alerts.routes]]``: notifications about ``services`` (globs) in ``statuses`` go to ``notifiers``."""

    notifiers: tuple[str, ...] = Field(min_length=1)
    services: tuple[str, ...] = ("*",)
    statuses: tuple[Literal["DOWN", "UP"], ...] = ("DOWN", "UP")


class AlertSettings(_Section):
    """Alerts (``msgrelay alert``, ``monitor``, ``notify``) travel in a queue of their own, apart from the log
    messages, so a slow notifier never holds up log processing. They share ``queue.namespace`` and the
    dead-letter stream."""

    transport: Literal["streams", "lists"] = "streams"
    stream: str = Field("msgrelay:alerts", min_length=1, description="stream key (streams transport)")
    group: str = Field("msgrelay-notify", min_length=1, description="consumer group of the notifiers")
    list_key: str = Field(
        "tweet_queue", min_length=1, description="list key (lists transport): the existing bot's queue"
    )
    max_message_bytes: int = Field(16 * 1024, gt=0, description="larger alerts are dead-lettered")
    batch_size: int = Field(100, gt=0, description="alerts read together (and grouped) at most")
    group_wait_s: float = Field(
        2.0, ge=0, description="alerts arriving this soon after the first are grouped into one notification"
    )
    block_timeout_s: float = Field(1.0, gt=0, description="how long one read waits for new alerts")
    repeat_interval_s: float = Field(
        4 * 3600.0, gt=0, description="a service still down is notified again after this"
    )
    lease_s: float = Field(
        60.0, gt=0, description="a notification being sent is another consumer's to retry after this"
    )
    max_attempts: int = Field(
        8, ge=1, description="failed sends of a notification before it is dead-lettered"
    )
    retry_backoff_s: float = Field(1.0, gt=0, description="first retry delay of a failed send; doubles up to")
    retry_backoff_cap_s: float = Field(300.0, gt=0)
    notifiers: tuple[NotifierSettings, ...] = (ConsoleSettings(),)
    routes: tuple[RouteSettings, ...] = ()
    default_notifiers: tuple[str, ...] = ("console",)

    @model_validator(mode="after")
    def _notifiers_named_once_and_known(self) -> Self:
        names = [notifier_name(notifier) for notifier in self.notifiers]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"notifier names must differ (set name = ...): {', '.join(twice)}")
        wanted = [*self.default_notifiers, *(name for route in self.routes for name in route.notifiers)]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"routes name notifiers that are not configured: {', '.join(unknown)}")
        return self

    def as_queue(self, namespace: str) -> QueueSettings:
        """The alert queue described as a :class:`QueueSettings`, for the transports."""
        return QueueSettings(
            transport=self.transport,
            stream=self.stream,
            group=self.group,
            buffer_key=self.list_key,
            namespace=namespace,
            max_message_bytes=self.max_message_bytes,
        )


class MonitorSettings(_Section):
    """``msgrelay monitor``: the services it checks, one ``[[monitor.checks]]`` table each (see
    :class:`msgrelay.alerting.health.CheckSettings`: service, kind, url / host + port / command ...)."""

    checks: tuple[CheckSettings, ...] = ()


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    redis: RedisSettings = RedisSettings()
    queue: QueueSettings = QueueSettings()
    producer: ProducerSettings = ProducerSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    deadletter: DeadLetterSettings = DeadLetterSettings()
    alerts: AlertSettings = AlertSettings()
    monitor: MonitorSettings = MonitorSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def blocking_reads(self, section: Literal["consumer", "alerts"]) -> dict[str, float]:
        """The settings that bound one blocking read of ``consume`` (``section="consumer"``) or ``notify``
        (``"alerts"``), by key: the first read waits ``block_timeout_s``, the reads filling a batch up to
        ``batch_wait_s`` / ``group_wait_s``. Seconds."""
        if section == "consumer":
            return {
                "consumer.block_timeout_s": self.consumer.block_timeout_s,
                "consumer.batch_wait_s": self.consumer.batch_wait_s,
            }
        return {
            "alerts.block_timeout_s": self.alerts.block_timeout_s,
            "alerts.group_wait_s": self.alerts.group_wait_s,
        }

    def check_blocking_reads(self, section: Literal["consumer", "alerts"]) -> None:
        """Raise :class:`ConfigError`, naming both keys and values, when ``redis.socket_timeout_s`` is not
        larger than a blocking read of ``section``: every read that waits that long would end in a socket
        timeout, a reconnect and a backoff instead of its reply (alerts delivered seconds late)."""
        socket_timeout = self.redis.socket_timeout_s
        key, longest = max(self.blocking_reads(section).items(), key=lambda item: item[1])
        if socket_timeout <= longest:
            raise ConfigError(
                f"redis.socket_timeout_s = {socket_timeout:g} must be larger than {key} = {longest:g}: "
                f"a read blocked that long would time out. Raise redis.socket_timeout_s, or leave it unset "
                f"to derive it ({key} + {BLOCK_MARGIN_S:g} s)"
            )


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build the effective settings. ``overrides`` are CLI flags: ``{"consumer": {"batch_size": 10}}``.

    ``config_file`` defaults to ``$MSGRELAY_CONFIG``, else ``./msgrelay.toml`` if it exists.
    Raises :class:`ConfigError` naming every unknown or invalid key.
    """
    path = _resolve_config_file(config_file, os.environ)
    _reject_unknown_env(os.environ)
    flags: dict[str, Any] = {
        section: given
        for section, values in (overrides or {}).items()
        if (given := {key: value for key, value in values.items() if value is not None})
    }
    token = _config_file.set(path)
    try:
        return _with_derived_socket_timeout(Settings(**flags))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    finally:
        _config_file.reset(token)


def _resolve_config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None or env.get(CONFIG_ENV_VAR):
        path = explicit if explicit is not None else Path(env[CONFIG_ENV_VAR])
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _with_derived_socket_timeout(settings: Settings) -> Settings:
    """``redis.socket_timeout_s``, unless set, outlasts every blocking read by ``BLOCK_MARGIN_S``."""
    redis = settings.redis
    if "socket_timeout_s" in redis.model_fields_set:
        return settings
    longest = max(*settings.blocking_reads("consumer").values(), *settings.blocking_reads("alerts").values())
    derived = max(DEFAULT_SOCKET_TIMEOUT_S, longest + BLOCK_MARGIN_S)
    if derived == redis.socket_timeout_s:
        return settings
    # model_construct keeps the derived value out of model_fields_set: it still reads as "not set".
    fields = {**dict(redis), "socket_timeout_s": derived}
    derived_redis = RedisSettings.model_construct(_fields_set=set(redis.model_fields_set), **fields)
    return settings.model_copy(update={"redis": derived_redis})


def _env_var_names() -> list[str]:
    """Every setting's environment variable: ``MSGRELAY_CONSUMER__BATCH_SIZE`` ..., and those of the tables
    inside a section: ``MSGRELAY_CONSUMER__ROTATION__MAX_BYTES``."""
    return [f"{ENV_PREFIX}{name}".upper() for name in _field_paths(Settings)]


def _field_paths(model: type[BaseModel]) -> list[str]:
    """``section__key`` (and ``section__table__key``) for every field below ``model``'s sections."""
    paths = []
    for name, info in model.model_fields.items():
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            paths += [f"{name}__{rest}" for rest in _field_paths(inner)] or [name]
        elif model is not Settings:
            paths.append(name)
    return paths


def _reject_unknown_env(env: Mapping[str, str]) -> None:
    known = _env_var_names()
    for var in env:
        if not var.startswith(ENV_PREFIX) or var in NON_SETTING_ENV_VARS or var.upper() in known:
            continue
        sections = ", ".join(name.upper() for name in Settings.model_fields)
        raise ConfigError(
            f"unknown environment variable {var}{did_you_mean(var.upper(), known)}: expected "
            f"MSGRELAY_<SECTION>__<KEY> with SECTION one of {sections}"
        )


def _describe(exc: ValidationError, path: Path | None) -> str:
    problems = []
    for error in exc.errors():
        loc, message = error["loc"], error["msg"].removeprefix("Value error, ")
        if error["type"] == STRICT_VALUE_ERROR:
            context = error.get("ctx", {})
            loc, message = (*loc, context["key"]), context["problem"]
        elif error["type"] == "extra_forbidden":
            message = "unknown key" + did_you_mean(str(loc[-1]), keys_at(Settings, loc[:-1]))
        problems.append(".".join(str(part) for part in loc) + f": {message}")
    origin = f" (config file: {path})" if path else ""
    return "invalid configuration" + origin + ": " + "; ".join(problems)


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret masked (for ``msgrelay config show``)."""
    data = settings.model_dump(mode="json")
    redis = data["redis"]
    if redis.get("url"):
        redis["url"] = mask_url(redis["url"])
    if settings.redis.password is not None:
        redis["password"] = "***"  # noqa: S105 - the mask, not a password
    redis["effective_url"] = mask_url(settings.redis.effective_url())
    for check in data["monitor"]["checks"]:
        if check.get("url"):
            check["url"] = mask_url(check["url"])  # a Redis check's URL may hold a password
    return data
