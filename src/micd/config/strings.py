"""Typed values from ``snakemake --config``, which passes everything below the top level as text.

``snakemake --config 'seeds=[0,1]'`` reads the list with YAML's base loader: the workflow gets
``["0", "1"]``, which the schema refuses (``seeds.0: '0' is not of type 'integer'``).
:func:`typed_config` turns such text into the number, boolean or null that the schema (or, for
the open ``method_settings``, ``method_train`` and ``datasets.<name>.train`` objects, the
settings dataclass) asks for, and leaves everything else, including text that is not such a
value, for the configuration check to name.

    >>> typed_config({"seeds": ["0", "1"], "methods": ["micd"]}, {"properties": {
    ...     "seeds": {"type": "array", "items": {"type": "integer"}},
    ...     "methods": {"type": "array", "items": {"type": "string"}}}})
    {'seeds': [0, 1], 'methods': ['micd']}
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

_INTEGER = re.compile(r"[+-]?\d+")
_BOOLEANS = {"true": True, "false": False}
_NULLS = {"null", "~"}


def _types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type", [])
    kinds = {declared} if isinstance(declared, str) else set(declared)
    for value in schema.get("enum", []):  # an enum of numbers or booleans takes them too
        kinds.add({bool: "boolean", int: "integer", float: "number", type(None): "null"}.get(type(value), "string"))
    return kinds


def _typed_text(text: str, kinds: set[str]) -> Any:
    """``text`` as the first of the schema's non-string kinds it spells, else unchanged."""
    if "string" in kinds:
        return text
    word = text.strip()
    if kinds & {"integer", "number"} and _INTEGER.fullmatch(word):
        return int(word)
    if "number" in kinds:
        try:
            return float(word)
        except ValueError:
            pass
    if "boolean" in kinds and word.lower() in _BOOLEANS:
        return _BOOLEANS[word.lower()]
    if "null" in kinds and word.lower() in _NULLS:
        return None
    return text


def typed_value(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` with its text leaves typed as ``schema`` (JSON Schema, as config/schema.yaml) says."""
    if isinstance(value, str):
        return _typed_text(value, _types(schema))
    if isinstance(value, list):
        items = schema.get("items", {})
        return [typed_value(item, items) for item in value]
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", {})
        extra = extra if isinstance(extra, Mapping) else {}
        return {key: typed_value(item, properties.get(key, extra)) for key, item in value.items()}
    return value


def schema_of_type(hint: Any) -> dict[str, Any]:
    """The JSON Schema of a settings dataclass field's type (bool, int, float, str, X | None, list[X])."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds: list[str] = []
        items: dict[str, Any] = {}
        for member in typing.get_args(hint):
            member_schema = schema_of_type(member)
            kinds.append(member_schema.get("type", "string"))
            items = member_schema.get("items", items)
        return {"type": kinds, "items": items}
    if typing.get_origin(hint) in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return {"type": "array", "items": schema_of_type(args[0]) if args else {}}
    names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    return {"type": names[hint]} if hint in names else {}


def settings_schema(settings_class: type) -> dict[str, Any]:
    """An object schema of a settings dataclass's fields."""
    hints = typing.get_type_hints(settings_class)
    return {
        "type": "object",
        "properties": {f.name: schema_of_type(hints[f.name]) for f in dataclasses.fields(settings_class)},
    }


def typed_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration with command-line text typed: by the schema, and in the open objects of
    method and train settings by the registered methods' and the training loop's dataclasses."""
    from micd.methods import METHODS
    from micd.settings import TrainSettings

    train = settings_schema(TrainSettings)
    schema = dict(schema)
    properties = dict(schema.get("properties", {}))
    properties["method_settings"] = {
        "type": "object",
        "properties": {name: settings_schema(method.Settings) for name, method in METHODS.items()},
    }
    properties["method_train"] = {"type": "object", "additionalProperties": train}
    datasets = dict(properties.get("datasets", {}))
    each = dict(datasets.get("additionalProperties", {}))
    each["properties"] = {**each.get("properties", {}), "train": train}
    datasets["additionalProperties"] = each
    properties["datasets"] = datasets
    schema["properties"] = properties
    return typed_value(config, schema)
