"""creditwatch: alerts — the path from a warning to the person.

Plain Python with no Kafka import: the worker feeds it the warnings it
publishes, replay feeds it the same ones. The chain, after Alertmanager's
notify pipeline: route → inhibit → silence → breaker → dedup → group →
outbox → deliver (per-channel retry). Start at :mod:`alerts.pipeline`;
:mod:`alerts.factory` builds it, :mod:`alerts.admin` drives it.
"""
