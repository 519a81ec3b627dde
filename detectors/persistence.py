"""Saving shared models (pickle behind a version header) and checking them on load.

A blob written by another detector version, another river version or another
Python cannot be trusted to unpickle into the same thing, so :func:`loads`
refuses it: it logs why and returns None, and the caller starts fresh (the
model warms up again). It never raises on a bad blob. Only load blobs this
service wrote itself (its own Redis): pickle executes code.

>>> from detectors.population import PopulationAnomaly
>>> blob = dumps(PopulationAnomaly(seed=1), "population_anomaly@1.abcd")
>>> loads(blob, "population_anomaly@1.abcd").__class__.__name__
'PopulationAnomaly'
>>> loads(blob, "population_anomaly@2.abcd") is None
True
>>> loads(b"garbage", "population_anomaly@1.abcd") is None
True
"""

from __future__ import annotations

import logging
import pickle
import sys
from typing import Any

import orjson
import river

log = logging.getLogger(__name__)

MAGIC = b"CWDM1\n"


def _runtime() -> str:
    return f"river={river.__version__};py={sys.version_info.major}.{sys.version_info.minor}"


def dumps(model: Any, version: str) -> bytes:
    """``model`` pickled behind a header naming ``version`` and the runtime."""
    header = orjson.dumps({"version": version, "runtime": _runtime()})
    return MAGIC + header + b"\n" + pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def loads(blob: bytes | None, expected_version: str) -> Any | None:
    """The model in ``blob`` if it was written by ``expected_version`` here, else None."""
    if not blob:
        return None
    try:
        if not blob.startswith(MAGIC):
            raise ValueError("not a creditwatch model blob")
        header_end = blob.index(b"\n", len(MAGIC))
        header = orjson.loads(blob[len(MAGIC) : header_end])
        if header.get("version") != expected_version:
            log.warning(
                "detector model version changed (%s -> %s): starting fresh",
                header.get("version"),
                expected_version,
            )
            return None
        if header.get("runtime") != _runtime():
            log.warning(
                "detector model %s was saved under %s, running %s: starting fresh",
                expected_version,
                header.get("runtime"),
                _runtime(),
            )
            return None
        return pickle.loads(blob[header_end + 1 :])
    except Exception as exc:  # any corrupt or foreign blob: start fresh, say why
        log.warning(
            "detector model %s could not be restored (%r): starting fresh", expected_version, exc
        )
        return None
