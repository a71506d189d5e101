"""The base of every table of the configuration: an unknown key is an error (with the closest known key:
"did you mean ..."), and no value changes type silently.

pydantic's lax mode would read ``fsync = "yes"``, ``fsync = 1`` or ``MSGRELAY_CONSUMER__FSYNC=on`` as true,
``batch_size = true`` as 1 and ``batch_size = 2.0`` as 2: a typo or a value meant for another key would be
taken without a word. Here a boolean is ``true`` or ``false`` (TOML booleans; in the environment, where
every value is a string, the words ``true`` / ``false`` in any case), a number is never a boolean, and a
whole number is never a float. Numbers written as strings (the environment's only way) are still read.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

_SEQUENCES = (tuple, list, frozenset, set)


class SettingsTable(BaseModel):
    """One table of the config file (``[consumer]``, ``[[monitor.checks]]`` ...): frozen, strict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A model validator, not a field validator on "*": pydantic allows no "before" validator on the
    # discriminator field of the notifiers' tagged union ("kind").
    @model_validator(mode="before")
    @classmethod
    def _no_silent_coercion(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        checked = dict(data)
        for key, value in data.items():
            field = cls.model_fields.get(key) if isinstance(key, str) else None
            if field is None:
                continue  # unknown keys are reported by extra="forbid"
            try:
                checked[key] = exact_scalar(value, field.annotation)
            except ValueError as exc:
                raise PydanticCustomError(
                    STRICT_VALUE_ERROR, "{key}: {problem}", {"key": key, "problem": str(exc)}
                ) from None
        return checked


STRICT_VALUE_ERROR = "strict_value"
"""pydantic's error type for a value refused by :func:`exact_scalar`; its context holds ``key`` and
``problem`` (the error's location is the table's, so the key travels in the context)."""


def exact_scalar(value: Any, annotation: Any) -> Any:
    """``value`` unchanged, or a ``"true"``/``"false"`` string as a bool for a boolean field.

    Raises ``ValueError`` for: anything but a boolean (or
    those two words) in a boolean field; a boolean in a number field; a float in a whole-number field.
    Sequences (``expect_status = [200, 204]``) are checked element by element."""
    if value is None:
        return value
    element = _element_of(annotation)
    if element is not None and isinstance(value, list | tuple):
        return [exact_scalar(item, element) for item in value]
    kinds = _scalar_kinds(annotation)
    if bool in kinds and str not in kinds:
        return _boolean(value)
    if isinstance(value, bool) and kinds & {int, float}:
        raise ValueError(f"expected a number, got {str(value).lower()}")
    if isinstance(value, float) and int in kinds and float not in kinds:
        raise ValueError(f"expected a whole number, got {value!r}")
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


def _scalar_kinds(annotation: Any) -> set[Any]:
    """The plain types a field accepts: ``bool | None`` -> {bool, NoneType}."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _scalar_kinds(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return set().union(*(_scalar_kinds(member) for member in get_args(annotation)))
    return {annotation}


def _element_of(annotation: Any) -> Any:
    """The element type of a sequence field (``tuple[str, ...]``, ``frozenset[int] | None``), else None."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _element_of(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        elements = [e for member in get_args(annotation) if (e := _element_of(member)) is not None]
        return elements[0] if len(elements) == 1 else None
    if origin in _SEQUENCES:
        return get_args(annotation)[0]
    return None


# --- unknown keys: did you mean ... --------------------------------------------------------------------


def did_you_mean(name: str, known: list[str]) -> str:
    """`` (did you mean batch_size?)`` for the closest known name (difflib's ratio >= 0.6), else ``""``."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def keys_at(annotation: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The keys of the table at pydantic's error location ``loc`` (``("alerts", "notifiers", 0,
    "webhook")``: a webhook notifier's keys); ``[]`` where ``loc`` leads to no table."""
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _step(annotation: Any, part: int | str) -> Any:
    """One step of an error location: a table's key, a sequence's index, or a tagged union's tag."""
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return None if field is None else field.annotation
    args = get_args(annotation)
    if get_origin(annotation) in (tuple, list, frozenset) and isinstance(part, int):
        return args[0]
    if get_origin(annotation) in (Union, types.UnionType):  # pydantic names the member by its tag
        tagged = [m for m in args if _strip(m) is not type(None) and _tag(_strip(m)) == part]
        return tagged[0] if tagged else None
    return None


def _strip(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X``; ``X | None`` -> ``X``."""
    if get_origin(annotation) is Annotated:
        return _strip(get_args(annotation)[0])
    members = [m for m in get_args(annotation) if m is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(members) == 1:
        return _strip(members[0])
    return annotation


def _tag(model: Any) -> object:
    """The ``kind`` tag of a member of a tagged union (a notifier's settings): its ``Literal`` value."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or "kind" not in model.model_fields:
        return None
    tags = get_args(model.model_fields["kind"].annotation)
    return tags[0] if tags else None
