"""What the configuration-check tests share: the schema, the default configuration, and the
check's message for the default configuration with some keys changed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from micd.config.check import ConfigError, check_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def problems_of(changes: dict) -> str:
    """The config check's message for the default configuration with ``changes`` (dotted keys,
    e.g. ``train.lr``) set; fails the test if the check passes."""
    config = copy.deepcopy(DEFAULT)
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value
    with pytest.raises(ConfigError) as info:
        check_config(config, SCHEMA)
    return str(info.value)
