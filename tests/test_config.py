"""Configuration: flag > environment > file > default, strict about unknown keys, and never leaking secrets.

The autouse ``_isolated_env`` fixture clears every MSGRELAY_* variable and chdirs into ``tmp_path``, so
``./msgrelay.toml`` here is a file this test wrote.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal, get_args

import pytest
import redis
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from msgrelay.config import RedisSettings, Settings, load_settings, masked_dump
from msgrelay.errors import ConfigError
from msgrelay.urls import mask_url

CONFIG_TOML = """
[consumer]
batch_size = 11
block_timeout_s = 2.5
processing_delay_s = 0.25

[queue]
transport = "lists"
"""


def write_config(path: Path, text: str = CONFIG_TOML) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- precedence ---------------------------------------------------------------------------------------


def test_defaults_apply_when_nothing_is_configured() -> None:
    settings = load_settings()

    assert settings.consumer.batch_size == 500
    assert settings.queue.transport == "streams"
    assert settings.redis.effective_url() == "redis://localhost:6379/0"


def test_config_file_in_the_working_folder_overrides_defaults(tmp_path: Path) -> None:
    write_config(tmp_path / "msgrelay.toml")

    settings = load_settings()

    assert settings.consumer.batch_size == 11
    assert settings.consumer.block_timeout_s == 2.5
    assert settings.queue.transport == "lists"
    assert settings.consumer.batch_wait_s == 0.0  # untouched keys keep their default


def test_environment_overrides_the_file_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path / "msgrelay.toml")
    monkeypatch.setenv("MSGRELAY_CONSUMER__BATCH_SIZE", "22")
    monkeypatch.setenv("MSGRELAY_QUEUE__TRANSPORT", "streams")

    settings = load_settings()

    assert settings.consumer.batch_size == 22
    assert settings.queue.transport == "streams"
    assert settings.consumer.block_timeout_s == 2.5  # from the file: other keys of the section survive


def test_flags_override_environment_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path / "msgrelay.toml")
    monkeypatch.setenv("MSGRELAY_CONSUMER__BATCH_SIZE", "22")
    monkeypatch.setenv("MSGRELAY_CONSUMER__PROCESSING_DELAY_S", "0.5")

    settings = load_settings(overrides={"consumer": {"batch_size": 33, "consumer_name": None}})

    assert settings.consumer.batch_size == 33  # flag
    assert settings.consumer.processing_delay_s == 0.5  # env
    assert settings.consumer.block_timeout_s == 2.5  # file
    assert settings.consumer.consumer_name is None  # a flag left unset (None) does not override anything


def test_flag_left_unset_does_not_hide_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGRELAY_CONSUMER__CONSUMER_NAME", "from-env")

    settings = load_settings(overrides={"consumer": {"consumer_name": None}})

    assert settings.consumer.consumer_name == "from-env"


# --- which file ---------------------------------------------------------------------------------------


def test_msgrelay_config_names_the_file_instead_of_the_working_folder_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path / "msgrelay.toml")
    other = write_config(tmp_path / "other.toml", "[consumer]\nbatch_size = 44\n")
    monkeypatch.setenv("MSGRELAY_CONFIG", str(other))

    assert load_settings().consumer.batch_size == 44


def test_explicit_path_wins_over_msgrelay_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = write_config(tmp_path / "env.toml", "[consumer]\nbatch_size = 44\n")
    explicit = write_config(tmp_path / "explicit.toml", "[consumer]\nbatch_size = 55\n")
    monkeypatch.setenv("MSGRELAY_CONFIG", str(from_env))

    assert load_settings(explicit).consumer.batch_size == 55


def test_missing_explicit_config_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(missing)


def test_missing_file_named_by_msgrelay_config_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSGRELAY_CONFIG", str(tmp_path / "gone.toml"))

    with pytest.raises(ConfigError, match=r"gone\.toml"):
        load_settings()


def test_unparsable_config_file_is_a_config_error(tmp_path: Path) -> None:
    write_config(tmp_path / "msgrelay.toml", "[consumer\nbatch_size = \n")

    with pytest.raises(ConfigError, match=r"msgrelay\.toml"):
        load_settings()


# --- strictness ---------------------------------------------------------------------------------------


def test_unknown_key_in_the_file_is_an_error_naming_it(tmp_path: Path) -> None:
    write_config(tmp_path / "msgrelay.toml", "[consumer]\nbatch_size = 5\nbatch_sise = 6\n")

    with pytest.raises(ConfigError, match="batch_sise"):
        load_settings()


def test_unknown_section_in_the_file_is_an_error_naming_it(tmp_path: Path) -> None:
    write_config(tmp_path / "msgrelay.toml", "[consumr]\nbatch_size = 5\n")

    with pytest.raises(ConfigError, match="consumr"):
        load_settings()


@pytest.mark.parametrize(
    "var", ["MSGRELAY_CONSUMER__BATCH_SISE", "MSGRELAY_CONSUMR__BATCH_SIZE", "MSGRELAY_BATCH_SIZE"]
)
def test_unknown_msgrelay_environment_variable_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.setenv(var, "5")

    with pytest.raises(ConfigError, match=var):
        load_settings()


def test_msgrelay_redis_server_variable_is_not_mistaken_for_a_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It chooses the redis-server binary of the demo and the tests (msgrelay.redis_server), not a setting.
    monkeypatch.setenv("MSGRELAY_REDIS_SERVER", "/usr/bin/redis-server")

    assert load_settings().consumer.batch_size == 500


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("MSGRELAY_CONSUMER__BATCH_SIZE", "many", "batch_size"),
        ("MSGRELAY_CONSUMER__BATCH_SIZE", "0", "batch_size"),
        ("MSGRELAY_QUEUE__TRANSPORT", "kafka", "transport"),
        ("MSGRELAY_REDIS__PORT", "70000", "port"),
    ],
)
def test_invalid_environment_value_is_an_error_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str
) -> None:
    monkeypatch.setenv(var, value)

    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_invalid_value_in_the_file_is_an_error_naming_key_and_file(tmp_path: Path) -> None:
    write_config(tmp_path / "msgrelay.toml", "[consumer]\nblock_timeout_s = -1\n")

    with pytest.raises(ConfigError, match="block_timeout_s") as caught:
        load_settings()
    assert "msgrelay.toml" in str(caught.value)


def test_invalid_flag_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        load_settings(overrides={"consumer": {"batch_size": -3}})


def test_settings_are_immutable() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.consumer.batch_size = 5  # type: ignore[misc]


# --- secrets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://user:pw@h/0", "redis://user:***@h/0"),
        ("rediss://:s3cret@cache.example.com:6380/2", "rediss://:***@cache.example.com:6380/2"),
        ("redis://:p@ss:w0rd@h:1/0", "redis://:***@h:1/0"),  # '@' and ':' inside the password
        ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),  # IPv6 host keeps its brackets
        ("unix://:pw@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("redis://h:6379/0?password=pw", "redis://h:6379/0?password=***"),  # redis-py reads it there too
    ],
)
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "pw" not in mask_url(url).replace("password", "")


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "redis://user@h:1/0", "rediss://h/0", "unix:///tmp/redis.sock?db=0"],
)
def test_mask_url_leaves_urls_without_a_password_alone(url: str) -> None:
    assert mask_url(url) == url


def test_effective_url_is_built_from_host_port_db() -> None:
    assert RedisSettings(host="cache", port=6380, db=3).effective_url() == "redis://cache:6380/3"


def test_effective_url_uses_tls_scheme_and_quotes_credentials() -> None:
    settings = RedisSettings(host="h", port=1, db=2, username="app user", password="p@ss:/w%rd#", tls=True)

    url = settings.effective_url()

    assert url == "rediss://app%20user:p%40ss%3A%2Fw%25rd%23@h:1/2"
    # redis-py reads back exactly the credentials we were given
    parsed = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    assert (parsed["username"], parsed["password"], parsed["host"], parsed["db"]) == (
        "app user", "p@ss:/w%rd#", "h", 2,
    )  # fmt: skip


def test_effective_url_with_password_only_and_with_username_only() -> None:
    assert RedisSettings(password="pw").effective_url() == "redis://:pw@localhost:6379/0"
    assert RedisSettings(username="u").effective_url() == "redis://u@localhost:6379/0"


def test_url_wins_over_host_and_port() -> None:
    settings = RedisSettings(url="redis://elsewhere:7000/1", host="ignored", port=1)
    assert settings.effective_url() == "redis://elsewhere:7000/1"


@pytest.mark.parametrize(
    "redis_section",
    [
        {"url": "redis://:hunter2-secret@h:1/0"},
        {"host": "h", "password": "hunter2-secret"},
        {"url": "redis://u:hunter2-secret@h:1/0", "password": "hunter2-secret"},
    ],
)
def test_masked_dump_never_contains_the_secret(redis_section: dict[str, str]) -> None:
    settings = load_settings(overrides={"redis": redis_section})

    dumped = masked_dump(settings)

    assert "hunter2-secret" not in json.dumps(dumped)
    assert "***" in dumped["redis"]["effective_url"]
    assert dumped["consumer"]["batch_size"] == 500  # the rest is all there


def test_password_from_the_environment_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGRELAY_REDIS__PASSWORD", "hunter2-secret")

    settings = load_settings()

    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" in settings.redis.effective_url()  # but clients still get it


def test_settings_can_be_built_for_both_transports() -> None:
    for transport in ("streams", "lists"):
        settings = load_settings(overrides={"queue": {"transport": transport}})
        assert isinstance(settings, Settings)
        assert settings.queue.transport == transport


def test_every_toml_example_in_the_readme_is_a_valid_configuration(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    examples = re.findall(r"```toml\n(.*?)```", readme, re.DOTALL)
    assert len(examples) >= 2
    for number, example in enumerate(examples):
        path = tmp_path / f"example-{number}.toml"
        path.write_text(example)
        load_settings(path)  # raises ConfigError naming any key that is not a setting


# --- no silent coercion (issue 10, section 8) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[consumer]\nfsync = "yes"\n', "consumer.fsync: expected true or false, got 'yes'"),
        ("[consumer]\nfsync = 1\n", "consumer.fsync: expected true or false, got 1"),
        ('[redis]\ntls = "on"\n', "redis.tls: expected true or false"),
        ("[consumer]\nbatch_size = true\n", "consumer.batch_size: expected a number, got true"),
        ("[consumer]\nbatch_size = 5.0\n", "consumer.batch_size: expected a whole number, got 5.0"),
        ("[consumer]\nblock_timeout_s = true\n", "consumer.block_timeout_s: expected a number"),
        (
            '[[monitor.checks]]\nservice = "api"\nkind = "http"\nurl = "http://x"\n'
            "expect_status = [200, true]\n",
            "monitor.checks.0.expect_status: expected a number",
        ),
        (
            '[[alerts.notifiers]]\nkind = "log"\npath = "a.log"\nfsync = "no"\n',
            "alerts.notifiers.0.log.fsync: expected true or false",
        ),
    ],
)
def test_a_value_of_the_wrong_kind_in_the_file_is_an_error_naming_the_key(
    tmp_path: Path, toml: str, named: str
) -> None:
    write_config(tmp_path / "msgrelay.toml", toml)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert named in str(caught.value)


@pytest.mark.parametrize("value", ["yes", "no", "1", "0", "on", "off", "y", ""])
def test_a_boolean_in_the_environment_is_true_or_false_only(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MSGRELAY_CONSUMER__FSYNC", value)

    with pytest.raises(ConfigError, match=r"consumer\.fsync: expected true or false"):
        load_settings()


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("false", False), ("TRUE", True), ("False", False)]
)
def test_true_and_false_in_any_case_are_booleans_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("MSGRELAY_CONSUMER__FSYNC", value)
    monkeypatch.setenv("MSGRELAY_CONSUMER__BATCH_SIZE", "7")  # numbers from the environment still read

    settings = load_settings()

    assert (settings.consumer.fsync, settings.consumer.batch_size) == (expected, 7)


def _scalar_fields() -> list[tuple[str, str, type]]:
    """(section, key, kind) of every bool / int / float setting of every section."""
    fields = []
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type)
        for key, field in model.model_fields.items():
            kinds = {field.annotation, *get_args(field.annotation)} & {bool, int, float}
            if kinds:
                fields.append((section, key, max(kinds, key=[bool, int, float].index)))
    return fields


SCALAR_FIELDS = _scalar_fields()
NOT_A_BOOLEAN = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8).filter(lambda text: text.strip().lower() not in ("true", "false")),
)


@given(field=st.sampled_from(SCALAR_FIELDS), data=st.data())
@hypothesis_settings(max_examples=300, deadline=None)
def test_no_setting_takes_a_value_of_another_kind(field: tuple[str, str, type], data: st.DataObject) -> None:
    """The kind, over every boolean, whole-number and float setting: a boolean takes only true/false, a
    number never a boolean, a whole number never a float."""
    section, key, kind = field
    if kind is bool:
        value: object = data.draw(NOT_A_BOOLEAN)
    elif kind is int:
        value = data.draw(st.one_of(st.booleans(), st.floats(allow_nan=False)))
    else:
        value = data.draw(st.booleans())

    with pytest.raises(ConfigError, match=rf"{section}\.{key}: expected"):
        load_settings(overrides={section: {key: value}})


# --- "did you mean" -----------------------------------------------------------------------------------------


def test_an_unknown_key_in_the_file_names_the_closest_known_key(tmp_path: Path) -> None:
    write_config(tmp_path / "msgrelay.toml", "[consumer]\nbatch_sise = 5\n[consumr]\nlog_dir = 'x'\n")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "consumer.batch_sise: unknown key (did you mean batch_size?)" in str(caught.value)
    assert "consumr: unknown key (did you mean consumer?)" in str(caught.value)


def test_an_unknown_key_of_a_notifier_or_a_check_names_the_closest_key_of_its_kind(tmp_path: Path) -> None:
    write_config(
        tmp_path / "msgrelay.toml",
        '[[alerts.notifiers]]\nkind = "webhook"\nurl = "https://h/x"\nstlye = "slack"\n'
        '[[monitor.checks]]\nservice = "db"\nkind = "tcp"\nhost = "db"\nport = 5432\nintervall_s = 5\n',
    )

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "alerts.notifiers.0.webhook.stlye: unknown key (did you mean style?)" in str(caught.value)
    assert "monitor.checks.0.intervall_s: unknown key (did you mean interval_s?)" in str(caught.value)


def test_an_unknown_environment_variable_names_the_closest_known_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGRELAY_CONSUMER__BATCHSIZE", "5")

    with pytest.raises(ConfigError, match=r"did you mean MSGRELAY_CONSUMER__BATCH_SIZE\?"):
        load_settings()


def _typos(key: str) -> list[str]:
    """Every one-letter deletion and every swap of two neighbours (those that differ from ``key``)."""
    deletions = [key[:i] + key[i + 1 :] for i in range(len(key))]
    swaps = [key[:i] + key[i + 1] + key[i] + key[i + 2 :] for i in range(len(key) - 1)]
    return sorted({typo for typo in deletions + swaps if typo != key})


@pytest.mark.parametrize(("section", "key"), [(s, k) for s, k, _ in SCALAR_FIELDS if len(k) > 4])
def test_every_one_letter_typo_of_a_key_suggests_that_key(section: str, key: str) -> None:
    """The kind, over every numeric and boolean key of every section (longer than 4 letters: "db" minus a
    letter is no longer recognisably "db")."""
    for typo in _typos(key):
        with pytest.raises(ConfigError) as caught:
            load_settings(overrides={section: {typo: 1}})
        assert f"{section}.{typo}: unknown key (did you mean {key}?)" in str(caught.value), typo


# --- the socket timeout outlasts every blocking read (issue 10, section 7) ---------------------------------


@pytest.mark.parametrize(
    ("overrides", "socket_timeout_s"),
    [
        ({}, 10.0),  # the default blocks of 1 s: the default stands
        ({"consumer": {"block_timeout_s": 10}}, 15.0),  # the original scripts' timeout
        ({"consumer": {"batch_wait_s": 20}}, 25.0),
        ({"alerts": {"block_timeout_s": 12}}, 17.0),
        ({"alerts": {"group_wait_s": 30}}, 35.0),
        ({"consumer": {"block_timeout_s": 10}, "redis": {"socket_timeout_s": 60}}, 60.0),  # set: kept
    ],
)
def test_an_unset_socket_timeout_outlasts_the_longest_blocking_read(
    overrides: dict[str, dict[str, float]], socket_timeout_s: float
) -> None:
    settings = load_settings(overrides=overrides)

    assert settings.redis.socket_timeout_s == socket_timeout_s
    settings.check_blocking_reads("consumer")  # a derived value never conflicts
    settings.check_blocking_reads("alerts")


def test_a_derived_socket_timeout_still_reads_as_unset(tmp_path: Path) -> None:
    write_config(tmp_path / "msgrelay.toml", "[consumer]\nblock_timeout_s = 10\n[redis]\nhost = 'h'\n")

    settings = load_settings()

    assert settings.redis.socket_timeout_s == 15.0
    assert settings.redis.model_fields_set == {"host"}


@pytest.mark.parametrize(
    ("overrides", "section", "message"),
    [
        (
            {"redis": {"socket_timeout_s": 10}, "consumer": {"block_timeout_s": 10}},
            "consumer",
            "redis.socket_timeout_s = 10 must be larger than consumer.block_timeout_s = 10",
        ),
        (
            {"redis": {"socket_timeout_s": 2}, "alerts": {"block_timeout_s": 5}},
            "alerts",
            "redis.socket_timeout_s = 2 must be larger than alerts.block_timeout_s = 5",
        ),
        (
            {"redis": {"socket_timeout_s": 3}, "alerts": {"group_wait_s": 4}},
            "alerts",
            "redis.socket_timeout_s = 3 must be larger than alerts.group_wait_s = 4",
        ),
    ],
)
def test_a_socket_timeout_set_shorter_than_a_blocking_read_is_refused_with_both_values(
    overrides: dict[str, dict[str, float]], section: Literal["consumer", "alerts"], message: str
) -> None:
    settings = load_settings(overrides=overrides)

    with pytest.raises(ConfigError, match=re.escape(message)):
        settings.check_blocking_reads(section)
