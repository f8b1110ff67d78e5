"""config/schema.yaml's train section and micd.settings.TrainSettings say the same thing.

The settings class owns the train keys, their types, their allowed values and their least
values; the schema repeats them so that a configuration is checked (and documented) before any
job starts. These tests hold the two equal, so that neither can change alone.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from micd.config.strings import schema_of_type
from micd.settings import AMP_MODES, VALIDATION_MODES, TrainSettings

ROOT = Path(__file__).resolve().parents[2]
TRAIN = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())["properties"]["train"]
FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}
HINTS = typing.get_type_hints(TrainSettings)
ENUMS = {"validation": VALIDATION_MODES, "amp": AMP_MODES}


def test_the_schema_has_every_train_key_and_no_other():
    assert set(TRAIN["properties"]) == set(FIELDS)
    assert TRAIN["additionalProperties"] is False


@pytest.mark.parametrize("key", sorted(set(FIELDS) - set(ENUMS)))
def test_each_train_key_has_the_settings_type(key):
    declared = TRAIN["properties"][key]
    expected = schema_of_type(HINTS[key])
    kinds = declared["type"] if isinstance(declared["type"], list) else [declared["type"]]
    expected_kinds = expected["type"] if isinstance(expected["type"], list) else [expected["type"]]
    # JSON Schema's "number" takes integers too, as the settings' float fields do
    assert set(kinds) == set(expected_kinds), f"train.{key}: schema {kinds}, TrainSettings {expected_kinds}"
    if "array" in kinds:
        assert declared["items"]["type"] == expected["items"]["type"]


@pytest.mark.parametrize("key", sorted(ENUMS))
def test_each_enumerated_train_key_allows_the_settings_values(key):
    assert TRAIN["properties"][key]["enum"] == list(ENUMS[key])
    assert getattr(TrainSettings(), key) in ENUMS[key]


def test_every_default_of_the_settings_passes_the_schema():
    import jsonschema

    defaults = dataclasses.asdict(TrainSettings())
    jsonschema.validate(defaults, TRAIN)
