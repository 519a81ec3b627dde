"""One frozen settings object for the whole service.

Every value comes from a ``CREDITWATCH_*`` environment variable (nested values
use ``__``, e.g. ``CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS``) or from an optional
``.env`` file. The object is built once, by the composition root, never at
import time, so tests can build as many differently configured copies as they
need. A bad value fails at start with pydantic's message, which names the
field; secrets are ``SecretStr`` so they never show up in a repr or a log.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from alerts.config import AlertConfig
from schemas.topics import DEFAULT_TOPICS

Channel = Literal["sms", "email", "phone", "visit", "letter"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Frozen):
    """Connection to the Kafka cluster, including what production needs (SASL, TLS)."""

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    topic_partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    session_timeout_seconds: float = Field(default=30.0, ge=6.0, le=300.0)
    heartbeat_interval_seconds: float = Field(default=3.0, gt=0, le=60.0)
    max_partition_fetch_bytes: int = Field(default=256 * 1024, ge=16 * 1024, le=64 * 1024**2)
    """Per partition and fetch. Small enough that pausing a topic running ahead in
    event time takes effect within a few hundred events (streams/alignment.py)."""

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "kafka.security_protocol is SASL_*: kafka.sasl_mechanism, "
                "kafka.sasl_username and kafka.sasl_password are all required"
            )
        return self

    @property
    def broker_url(self) -> str:
        """The bootstrap list in Faust's ``kafka://host:port;host:port`` form."""
        hosts = [h.strip() for h in self.bootstrap_servers.split(",") if h.strip()]
        return ";".join(f"kafka://{h}" for h in hosts)


class RedisSettings(_Frozen):
    """Connection to Redis, the worker's system of record."""

    url: str = "redis://127.0.0.1:16379/0"
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    tls_ca_certs: str | None = None
    key_prefix: str = "cw"
    # How many of a customer's last events are remembered to refuse a redelivery
    # (a 12-character digest each, inside the customer's state).
    dedup_events_per_customer: int = Field(default=256, ge=16, le=100_000)
    # How long a dead-lettered message is remembered (so it is reported once).
    dead_letter_marker_ttl_days: int = Field(default=35, ge=1, le=3650)

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis.url must start with redis://, rediss:// or unix://")
        return value


_ADDRESS = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+$")


class SmtpSettings(_Frozen):
    """The risk desk's mail relay, and who is told.

    ``risk_desk`` gets the digests of early warnings, ``ops`` the notices about
    the alert path itself (a rule's circuit breaker opened or closed). Either
    may be empty: messages for a receiver with no addresses are kept in the
    alert outbox as undeliverable (``creditwatch alerts outbox``), not lost.
    ``starttls`` upgrades a plain connection (port 587); ``use_tls`` speaks TLS
    from the first byte (port 465); a relay takes one or the other.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=1025, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    use_tls: bool = False
    tls_ca_file: str | None = None
    """CA bundle that signed the relay's certificate (the system's CAs when unset)."""
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    sender: str = "creditwatch@localhost"
    risk_desk: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    subject_prefix: str = Field(default="[creditwatch]", max_length=40)

    @field_validator("risk_desk", "ops")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if not _ADDRESS.match(a)]
        if bad:
            raise ValueError(f"not an email address: {bad}")
        return value

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        address = value.rpartition("<")[2].rstrip(">").strip()
        if not _ADDRESS.match(address):
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("tls_ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _one_tls_mode(self) -> SmtpSettings:
        if self.use_tls and self.starttls:
            raise ValueError("smtp.use_tls and smtp.starttls exclude each other: choose one")
        return self


class AlertDeliverySettings(_Frozen):
    """The worker's alert path: warnings on the alerts topic to the desk's inbox.

    ``policy`` is the notification pipeline's own configuration (routes,
    inhibition, grouping, dedup, breaker, retries: ``alerts.config``), e.g.
    ``CREDITWATCH_ALERT_DELIVERY__POLICY__GROUP_WAIT=PT30S``.
    """

    enabled: bool = True
    public_base_url: str = "http://127.0.0.1:6066"
    """Where people reach this service's API: the links in emails start with it."""
    flush_interval_seconds: float = Field(default=5.0, gt=0, le=300)
    """How often due groups become digests (group waits are tens of seconds)."""
    deliver_idle_seconds: float = Field(default=1.0, gt=0, le=60)
    """How long delivery sleeps when the outbox has nothing due."""
    max_age_hours: float = Field(default=168.0, ge=0)
    """A warning published longer ago than this is listed but nobody is emailed
    (a new consumer group reading the topic's history must not mail it all); 0: no limit."""
    index_retention_days: int = Field(default=30, ge=1, le=3650)
    """How long ``GET /alerts`` lists a warning (the alerts topic is the record)."""
    index_max_alerts: int = Field(default=200_000, ge=100, le=10_000_000)
    policy: AlertConfig = AlertConfig()

    @field_validator("public_base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class ApiSettings(_Frozen):
    """Bearer tokens of the worker's HTTP API (``docs/api.md``).

    Reads need ``read_token`` when one is set (the write token reads too);
    with none, reads are open. Writes (acknowledge, resolve, silence, release)
    need ``write_token``; with none, writes are refused: a worker never
    accepts changes from anyone who can reach its port.
    """

    read_token: SecretStr | None = None
    write_token: SecretStr | None = None

    @field_validator("read_token", "write_token")
    @classmethod
    def _strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("a token must be at least 16 characters")
        return value


class ClassificationSettings(_Frozen):
    """Upper DPD bound (inclusive) of each of the first four loan classes.

    Defaults follow the five-category rule: 0 normal, 1-90 special mention,
    91-180 substandard, 181-360 doubtful, over 360 loss.
    """

    normal_max_dpd: int = Field(default=0, ge=0)
    special_mention_max_dpd: int = Field(default=90, ge=0)
    substandard_max_dpd: int = Field(default=180, ge=0)
    doubtful_max_dpd: int = Field(default=360, ge=0)

    @model_validator(mode="after")
    def _increasing(self) -> ClassificationSettings:
        bands = [
            self.normal_max_dpd,
            self.special_mention_max_dpd,
            self.substandard_max_dpd,
            self.doubtful_max_dpd,
        ]
        if bands != sorted(set(bands)):
            raise ValueError("classification bands must be strictly increasing")
        return self


class AlertSettings(_Frozen):
    """What raises an early warning in the walking skeleton."""

    dpd_thresholds: tuple[int, ...] = (1, 30, 60, 90)
    failed_repayments_threshold: int = Field(default=2, ge=1)

    @field_validator("dpd_thresholds")
    @classmethod
    def _positive_sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(v < 1 for v in value) or list(value) != sorted(set(value)):
            raise ValueError("alerts.dpd_thresholds must be distinct positive, ascending days")
        return value


class TierSettings(_Frozen):
    """Risk score (0-1000) upper bounds of the premium, low and medium tiers."""

    premium_max: int = Field(default=99, ge=0, le=1000)
    low_max: int = Field(default=299, ge=0, le=1000)
    medium_max: int = Field(default=599, ge=0, le=1000)

    @model_validator(mode="after")
    def _increasing(self) -> TierSettings:
        if not self.premium_max < self.low_max < self.medium_max:
            raise ValueError("tiers: premium_max < low_max < medium_max is required")
        return self


class CollectionsSettings(_Frozen):
    """When collections work starts at each stage, and when a customer may be contacted."""

    reminder_from_dpd: int = Field(default=1, ge=1)
    call_from_dpd: int = Field(default=8, ge=1)
    visit_from_dpd: int = Field(default=31, ge=1)
    legal_review_from_dpd: int = Field(default=91, ge=1)
    quiet_start_hour: int = Field(default=21, ge=0, le=23)
    quiet_end_hour: int = Field(default=8, ge=0, le=23)
    # Public holidays of the customer's holiday_calendar are never contact days;
    # weekends are, unless this is set (make-up working days stay contact days).
    skip_public_holidays: bool = True
    skip_weekends: bool = False
    # Contacts per channel a customer may receive per local day and per ISO week;
    # a task over the cap is scheduled for the next day with room, never dropped.
    daily_contact_caps: dict[Channel, int] = Field(
        default_factory=lambda: {"sms": 1, "email": 1, "phone": 2, "visit": 1, "letter": 1}
    )
    weekly_contact_caps: dict[Channel, int] = Field(
        default_factory=lambda: {"sms": 3, "email": 3, "phone": 6, "visit": 2, "letter": 2}
    )

    @field_validator("daily_contact_caps", "weekly_contact_caps")
    @classmethod
    def _positive_caps(cls, value: dict[str, int]) -> dict[str, int]:
        bad = sorted(k for k, v in value.items() if v < 1)
        if bad:
            raise ValueError(f"a contact cap must be at least 1 (channels {bad})")
        return value

    @model_validator(mode="after")
    def _increasing(self) -> CollectionsSettings:
        starts = [
            self.reminder_from_dpd,
            self.call_from_dpd,
            self.visit_from_dpd,
            self.legal_review_from_dpd,
        ]
        if starts != sorted(set(starts)):
            raise ValueError("collections stage start days must be strictly increasing")
        return self

    @property
    def stage_starts(self) -> tuple[tuple[int, str], ...]:
        """(first DPD, stage) pairs in ascending order."""
        return (
            (self.reminder_from_dpd, "reminder"),
            (self.call_from_dpd, "call"),
            (self.visit_from_dpd, "visit"),
            (self.legal_review_from_dpd, "legal_review"),
        )


class FeatureSettings(_Frozen):
    """How the rolling customer features are computed and when they warn."""

    allowed_lateness_hours: float = Field(default=48.0, ge=0, le=24 * 30)
    night_start_hour: int = Field(default=22, ge=0, le=23)
    night_end_hour: int = Field(default=6, ge=0, le=23)
    novelty_warm_up_transactions: int = Field(default=10, ge=0)
    salary_grace_days: int = Field(default=5, ge=0, le=60)
    salary_drop_share: float = Field(default=0.3, gt=0, lt=1)
    on_time_instalments: int = Field(default=12, ge=1, le=12)
    diversion_window_days: int = Field(default=30, ge=1, le=365)
    diversion_alert_share: float = Field(default=0.3, gt=0, le=1)
    large_exposure_limit: Decimal = Field(default=Decimal("5000000"), gt=0)
    cure_on_time_instalments: int = Field(default=6, ge=1, le=36)
    expire_inactive_days: int = Field(default=400, ge=30)


class RuleSettings(_Frozen):
    """Which rule set judges events, and where it comes from.

    A worker starts with ``file`` (the shipped default pack unless set) and then
    follows the versions published to the rules topic under ``name``, so the
    desk changes thresholds without a deploy. ``enabled=False`` falls back to
    the engine's built-in warnings (for tests of the bare engine).
    """

    enabled: bool = True
    file: str | None = None
    name: str = Field(default="default", min_length=1, max_length=100)
    follow_published: bool = True
    ready_timeout_seconds: float = Field(default=15.0, ge=0, le=600)
    """How long a starting worker waits to read the rules topic before judging with its file."""


class DetectorSettings(_Frozen):
    """The online detectors: on or off, how often they may warn, how they persist."""

    enabled: bool = True
    alert_cooldown_hours: float = Field(default=24.0, ge=0, le=24 * 365)
    save_interval_seconds: float = Field(default=60.0, gt=0)
    default_probability_points: int = Field(default=200, ge=0, le=1000)
    explained_alerts_per_customer: int = Field(default=8, ge=0, le=256)


class AlignmentSettings(_Frozen):
    """Event-time alignment of the input topics in the worker (streams/alignment.py).

    Under a backlog a customer's events of different topics arrive out of
    event-time order; the worker holds the ones running ahead until the others
    catch up, so a worker judges as ``creditwatch replay`` does. A live worker
    holds nothing: every topic is caught up.
    """

    enabled: bool = True
    max_held_events: int = Field(default=100_000, ge=1_000, le=10_000_000)
    """Beyond this many held events the earliest are released out of turn (memory bound)."""
    max_stall_seconds: float = Field(default=60.0, gt=0, le=3600)
    """A topic-partition that delivers nothing this long, though behind, stops holding
    the others back (one that stops delivering cannot stall the rest)."""


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="CREDITWATCH_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        frozen=True,
    )

    app_id: str = "creditwatch"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=6066, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    data_dir: str = ".run/worker"
    dpd_tick_seconds: float = Field(default=3600.0, gt=0)
    # "event": arrears age with the servicing feed's event time (replayable,
    # the default). "wall": the tick also ages them with the wall clock, for a
    # live deployment whose servicing feed can fall silent for days.
    dpd_clock: Literal["event", "wall"] = "event"
    commit_interval_seconds: float = Field(default=1.0, gt=0)
    alignment: AlignmentSettings = AlignmentSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    smtp: SmtpSettings = SmtpSettings()
    classification: ClassificationSettings = ClassificationSettings()
    alerts: AlertSettings = AlertSettings()
    tiers: TierSettings = TierSettings()
    collections: CollectionsSettings = CollectionsSettings()
    features: FeatureSettings = FeatureSettings()
    rules: RuleSettings = RuleSettings()
    detectors: DetectorSettings = DetectorSettings()
    alert_delivery: AlertDeliverySettings = AlertDeliverySettings()
    api: ApiSettings = ApiSettings()
    topics: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TOPICS))

    @field_validator("topics")
    @classmethod
    def _all_topics_named(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = set(value) - set(DEFAULT_TOPICS)
        if unknown:
            raise ValueError(f"topics: unknown logical topic(s) {sorted(unknown)}")
        return {**DEFAULT_TOPICS, **value}


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
