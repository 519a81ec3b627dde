"""What a worker judges with, and how it lives: published rule sets and persistent detector models.

A worker judges every event with one :class:`risk.judge.Judge`. Two parts of
it change while the worker runs, and this module owns both:

- **the rule set**: the worker starts with its configured file (or the shipped
  default pack) in a :class:`rules.registry.RuleSetHolder` and, unless
  ``rules.follow_published`` is off, follows ``credit.rules.v1`` with a
  :class:`rules.watch.RulesWatcher`. The judge reads ``holder.current`` once
  per event, so an event is judged wholly by one version, and every warning
  carries it. A refused version is counted on ``/metrics`` and named on
  ``/healthz``; the last good one stays.
- **the detector models** shared by all customers (population trees, the
  default model, adaptive thresholds): restored from Redis before the first
  event, saved every ``detectors.save_interval_seconds`` and once more at
  shutdown after the last event (:mod:`detectors.redis_models`). A model saved
  by another code or parameter version starts fresh instead of crashing.

Processing waits for :attr:`JudgeServices.ready`: no event is judged by a
forgetful stack or by the shipped rules when a newer version is published.
The wait for the rules topic is bounded (``rules.ready_timeout_seconds``): with
Kafka briefly away the worker judges with its local rule set and takes the
published one when the watcher catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.settings import Settings
from creditwatch.metrics import Metrics
from detectors.redis_models import restore, save_now
from risk.judge import Judge, build_judge
from rules.engine import CompiledRuleSet
from rules.registry import RuleSetHolder
from rules.watch import RulesWatcher, local_holder

log = logging.getLogger(__name__)

RESTORE_RETRYABLE = (RedisError, OSError, TimeoutError, ConnectionError)


def writer_id() -> str:
    """Who saved a model set, for people reading ``{p}:dm:meta``: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class JudgeServices:
    """The judge of one worker with its rule-set watcher and detector-model persistence."""

    settings: Settings
    redis: Redis
    metrics: Metrics
    judge: Judge
    holder: RuleSetHolder | None
    watcher: RulesWatcher | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restored: list[str] = field(default_factory=list)
    last_save_error: str | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _saver: asyncio.Task[None] | None = None

    # -- start ------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the models, catch up with the rules topic, then let processing begin."""
        if self.settings.detectors.enabled:
            await self._restore_models()
            self._saver = asyncio.create_task(self._save_loop(), name="detector-models-save")
        if self.watcher is not None:
            await self.watcher.start()
            timeout = self.settings.rules.ready_timeout_seconds
            if not await self.watcher.wait_ready(timeout):
                log.warning(
                    "rules topic not read within %.0fs: judging with rule set %s until it is",
                    timeout,
                    self.rule_set_version,
                )
        self.ready.set()

    async def _restore_models(self) -> None:
        """Retried while Redis is away: processing needs Redis anyway."""
        prefix = self.settings.redis.key_prefix
        backoff = 0.1
        while True:
            try:
                stack = await restore(
                    self.redis,
                    prefix,
                    flags_kept=self.settings.detectors.explained_alerts_per_customer,
                )
                break
            except RESTORE_RETRYABLE as exc:
                log.warning("detector models not restored yet (%r); retrying", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        self.judge.stack = stack
        self.restored = list(stack.restored)

    # -- saving -----------------------------------------------------------------------

    async def _save_loop(self) -> None:
        interval = self.settings.detectors.save_interval_seconds
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            if self._stop.is_set():
                return
            await self.save()

    async def save(self) -> bool:
        """One save of the shared models; a failure is counted, logged and retried later."""
        stack = self.judge.stack
        if stack is None:
            return False
        try:
            size = await save_now(
                self.redis, self.settings.redis.key_prefix, stack, writer=writer_id()
            )
        except Exception as exc:  # Redis away: the next interval tries again
            self.last_save_error = repr(exc)
            self.metrics.detector_model_saves.labels("failed").inc()
            log.warning("saving the detector models failed: %r", exc)
            return False
        self.last_save_error = None
        self.metrics.detector_model_saves.labels("ok").inc()
        log.debug("detector models saved (%d bytes)", size)
        return True

    # -- stop -------------------------------------------------------------------------

    async def stop(self) -> None:
        """After the last event: stop following rules and save the models once more."""
        if self.watcher is not None:
            await self.watcher.stop()
        self._stop.set()
        if self._saver is not None:
            await self._saver
            self._saver = None
            await self.save()

    # -- reporting --------------------------------------------------------------------

    @property
    def rule_set_version(self) -> str | None:
        return self.holder.current.version if self.holder is not None else None

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` says about judging."""
        body: dict[str, Any] = {
            "ready": self.ready.is_set(),
            "rule_set": self.holder.current.name if self.holder is not None else None,
            "rule_set_version": self.rule_set_version,
            "detectors": self.settings.detectors.enabled,
            "detector_models_restored": self.restored,
            "detector_models_last_save_error": self.last_save_error,
        }
        if self.holder is not None:
            body["rule_sets_refused"] = self.holder.refused
            body["rule_set_last_error"] = self.holder.last_error
        if self.watcher is not None:
            stats = self.watcher.stats
            body["rules_topic_connected"] = stats.connected
        return body


def build_judge_services(settings: Settings, redis: Redis, metrics: Metrics) -> JudgeServices:
    """The judge a worker runs, its rule-set holder and watcher, wired to the metrics.

    An invalid local rule file fails here, at start, naming every problem.
    """
    holder: RuleSetHolder | None = None
    watcher: RulesWatcher | None = None
    if settings.rules.enabled:
        holder = local_holder(settings.rules.file)
        judged_by = holder  # a name the closure below binds to a holder, never None

        def changed(old: CompiledRuleSet, new: CompiledRuleSet) -> None:
            with contextlib.suppress(KeyError):
                metrics.rule_set_info.remove(old.name, old.version)
            metrics.rule_set_info.labels(new.name, new.version).set(1)

        holder.on_change = changed
        metrics.rule_set_info.labels(holder.current.name, holder.current.version).set(1)
        if settings.rules.follow_published:
            watcher = RulesWatcher(
                settings,
                holder,
                name=settings.rules.name,
                on_refused=lambda _version, _exc: metrics.rule_sets_refused.inc(),
            )
        judge = build_judge(settings, rules=lambda: judged_by.current)
    else:
        judge = build_judge(settings)
    return JudgeServices(
        settings=settings, redis=redis, metrics=metrics, judge=judge, holder=holder, watcher=watcher
    )
