"""The public surface is deliberate: what `from msgrelay import *` gives is what we support."""

import msgrelay


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert sorted(msgrelay.__all__) == sorted(
        [
            "BatchResult", "BrokerConnectionError", "BrokerError", "BrokerResponseError",
            "BrokerTimeoutError",
            "ConfigError", "Consumer", "ConsumerHook", "DeadLetterStore", "Delivery", "DecodeError",
            "LogFileSink", "Message", "MessageError", "MessageTooLarge", "MsgrelayError",
            "ProduceOutcomeUnknown", "Producer", "Settings", "Sink", "SinkError",
            "Totals", "__version__", "load_settings",
        ]
    )  # fmt: skip
    for name in msgrelay.__all__:
        assert hasattr(msgrelay, name), name


def test_every_error_shares_one_root() -> None:
    for name in msgrelay.__all__:
        obj = getattr(msgrelay, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, msgrelay.MsgrelayError), name
