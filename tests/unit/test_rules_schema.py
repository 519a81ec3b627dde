"""The editor schema is generated from the model and stays current."""

from __future__ import annotations

import json

import jsonschema
import yaml

from rules.loader import DEFAULT_PACK
from rules.model import SCHEMA_PATH, render_schema


def test_schema_file_is_current() -> None:
    assert SCHEMA_PATH.read_text() == render_schema(), "run: python -m rules.model"


def test_the_default_pack_validates_against_the_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(yaml.safe_load(DEFAULT_PACK.read_text()), schema)


def test_the_schema_rejects_an_unknown_feature_for_editors() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    data = yaml.safe_load(DEFAULT_PACK.read_text())
    data["rules"][0]["condition"]["all"][0]["feature"] = "max_dpdd"
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(data))
