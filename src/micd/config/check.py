"""Checks of the workflow configuration at load, with one short line per problem.

Snakemake's own schema validation names a problem and then prints the whole schema; a
misspelled key under an open object passes it silently. :func:`check_config` runs first and
reports every unknown key at every level with the nearest valid name, every value the schema
refuses, every method or variant that is not registered, and every method setting or
per-method train setting that does not exist.

    >>> check_config({"datasets": {}, "ratio": [5]}, schema)   # doctest: +SKIP
    ConfigError: 2 problems in the configuration:
      ratio: unknown key; did you mean 'ratios'?
      datasets: should be non-empty
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from micd.config.values import value_problems
from micd.names import nearest


class ConfigError(ValueError):
    """The configuration cannot run; the message lists every problem, one per line."""


def _suggestion(key: str, known: Iterable[str]) -> str:
    close = nearest(key, known)
    return f"; did you mean {close!r}?" if close else f"; known keys: {', '.join(sorted(known))}"


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path) if path else "(top level)"


def unknown_keys(config: Any, schema: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    """``path.key: unknown key; did you mean ...`` for every key the schema does not name.

    An object schema with ``properties`` is closed unless its ``additionalProperties`` is a
    schema, whose keys are then free and whose values are checked against it.
    """
    if not isinstance(config, Mapping):
        return []
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", not properties)
    problems = []
    for key, value in config.items():
        if key in properties:
            problems += unknown_keys(value, properties[key], (*path, str(key)))
        elif isinstance(extra, Mapping):
            problems += unknown_keys(value, extra, (*path, str(key)))
        elif extra is False:
            problems.append(f"{_where((*path, str(key)))}: unknown key{_suggestion(str(key), properties)}")
    return problems


def schema_errors(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Values the schema refuses, one line each (unknown keys are :func:`unknown_keys`'s)."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in validator.iter_errors(config):
        if error.validator == "additionalProperties":
            continue
        message = error.message
        if error.validator == "contains" and "const" in error.validator_value:  # jsonschema's words say less
            message = f"{error.instance} must include {error.validator_value['const']!r}"
        problems.append(f"{_where(tuple(map(str, error.absolute_path)))}: {message}")
    return sorted(problems)


def _fields(settings_class: type) -> set[str]:
    return {f.name for f in dataclasses.fields(settings_class)}


def method_problems(config: Mapping[str, Any], methods: Mapping[str, Any], train_fields: set[str]) -> list[str]:
    """Methods, variants and their settings that the registry does not know."""
    from micd.methods.base import unknown_setting
    from micd.training.runs import variants as run_variants

    variants = run_variants(config)
    registered = sorted(methods)
    problems = []

    def base_method(name: str) -> str | None:
        return name if name in methods else (variants.get(name) or {}).get("method")

    for key in ("methods", "ablation", "published_main_methods"):
        for name in config.get(key) or []:
            if base_method(name) not in methods:
                problems.append(
                    f"{key}: {name!r} is neither a registered method nor a variant; "
                    f"registered methods: {', '.join(registered)}"
                    + (f"; variants: {', '.join(sorted(variants))}" if variants else "")
                )
    for name, variant in variants.items():
        method = (variant or {}).get("method")
        if method not in methods:
            problems.append(
                f"variants.{name}.method: {method!r} is not registered; registered: {', '.join(registered)}"
            )
            continue
        known = _fields(methods[method].Settings)
        for key in variant.get("settings") or {}:
            if key not in known:
                problems.append(f"variants.{name}.settings.{key}: {unknown_setting(method, key, known)}")
    for name, settings in (config.get("method_settings") or {}).items():
        if name not in methods:
            problems.append(f"method_settings.{name}: not a registered method{_suggestion(name, methods)}")
            continue
        known = _fields(methods[name].Settings)
        for key in settings or {}:
            if key not in known:
                problems.append(f"method_settings.{name}.{key}: {unknown_setting(name, key, known)}")
    for name, settings in (config.get("method_train") or {}).items():
        if base_method(name) not in methods:
            known = [*methods, *variants]
            problems.append(f"method_train.{name}: neither a registered method nor a variant{_suggestion(name, known)}")
        problems += _train_override_problems(f"method_train.{name}", settings, train_fields)
    for name, dataset in (config.get("datasets") or {}).items():
        problems += _train_override_problems(f"datasets.{name}.train", (dataset or {}).get("train"), train_fields)
    return problems


def _train_override_problems(where: str, settings: Mapping[str, Any] | None, train_fields: set[str]) -> list[str]:
    return [
        f"{where}.{key}: no such train setting{_suggestion(key, train_fields)}"
        for key in settings or {}
        if key not in train_fields
    ]


def check_config(config: Mapping[str, Any], schema_path: Path | str) -> None:
    """Raise :class:`ConfigError` listing every problem of ``config`` (before defaults are set)."""
    from micd.methods import METHODS
    from micd.settings import TrainSettings

    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = unknown_keys(config, schema) + schema_errors(config, schema)
    problems += method_problems(config, METHODS, _fields(TrainSettings))
    problems += value_problems(config, schema)
    if problems:
        count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        raise ConfigError(f"{count} in the configuration:\n  " + "\n  ".join(problems))


def check_config_file(path: Path | str) -> None:
    """Raise :class:`ConfigError` naming ``path`` unless it is readable YAML with keys at the top
    level (Snakemake's own message names no file)."""
    try:
        content = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}: not valid YAML{line}: {problem}") from None
    if not isinstance(content, dict):
        found = "it is empty" if content is None else f"found {type(content).__name__}"
        raise ConfigError(f"{path}: expected a YAML mapping of settings (key: value lines), {found}")
