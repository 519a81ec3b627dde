"""Five-category classification bands and overrides, and settings validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.settings import ClassificationSettings, Settings
from risk.classification import class_for_dpd, loan_class, worst

BANDS = ClassificationSettings()


@pytest.mark.parametrize(
    ("dpd", "expected"),
    [
        (0, "normal"),
        (1, "special_mention"),
        (90, "special_mention"),
        (91, "substandard"),
        (180, "substandard"),
        (181, "doubtful"),
        (360, "doubtful"),
        (361, "loss"),
        (5000, "loss"),
    ],
)
def test_default_bands(dpd: int, expected: str) -> None:
    assert class_for_dpd(dpd, BANDS) == expected


def test_configured_bands_are_used() -> None:
    bands = ClassificationSettings(
        normal_max_dpd=5, special_mention_max_dpd=60, substandard_max_dpd=120, doubtful_max_dpd=240
    )
    assert class_for_dpd(5, bands) == "normal"
    assert class_for_dpd(61, bands) == "substandard"
    assert class_for_dpd(241, bands) == "loss"


def test_overrides() -> None:
    assert loan_class(0, BANDS, written_off=True, restructured=False) == "loss"
    assert loan_class(0, BANDS, written_off=False, restructured=True) == "substandard"
    assert loan_class(200, BANDS, written_off=False, restructured=True) == "doubtful"


def test_worst() -> None:
    assert worst([]) == "normal"
    assert worst(["normal", "doubtful", "special_mention"]) == "doubtful"


def test_bands_must_increase_and_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="strictly increasing"):
        ClassificationSettings(special_mention_max_dpd=200, substandard_max_dpd=100)
    with pytest.raises(ValidationError, match="http_port"):
        Settings(http_port=70000)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITWATCH_KAFKA__TOPIC_PARTITIONS", "8")
    monkeypatch.setenv("CREDITWATCH_REDIS__PASSWORD", "s3cret")
    settings = Settings()
    assert settings.kafka.topic_partitions == 8
    assert "s3cret" not in repr(settings)
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == "s3cret"


def test_sasl_requires_credentials() -> None:
    with pytest.raises(ValidationError, match="sasl"):
        Settings(kafka={"security_protocol": "SASL_SSL"})
