"""The type a settings dataclass gives each field, checked on values from a config or the command line.

A method's settings (``Method.Settings``) and the train settings (``micd.settings.TrainSettings``)
are dataclasses whose annotations are the only statement of what each key takes; a value of
another type (``mask_block: "8"``) would otherwise pass every check and fail at the first step.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint) or (Any,)
        return f"a list of {_type_name(item)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # YAML and JSON write 1 for 1.0
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def type_problems(settings_class: type, values: Mapping[str, Any]) -> dict[str, str]:
    """Key -> ``got '8' (a string), expected an integer`` for each known key whose value has the
    wrong type (unknown keys are left to the caller)."""
    hints = typing.get_type_hints(settings_class)
    fields = {f.name for f in dataclasses.fields(settings_class)}
    return {
        key: f"got {value!r} ({type(value).__name__}), expected {_type_name(hints[key])}"
        for key, value in values.items()
        if key in fields and not _matches(value, hints[key])
    }
