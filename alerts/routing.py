"""Route: which people a warning is for.

Rules and detectors put their route (``risk_desk``, ``collections`` or
``both``) into the warning's explanation; classification changes carry none
and take the configured default. The route names receivers (an email list,
an ops channel); a route with no receivers (``collections``: those teams take
their work from the collections-tasks topic) is recorded for dedup,
inhibition and resolve, but nobody is emailed.

>>> from alerts.config import AlertConfig
>>> route_of({"route": "both"}, AlertConfig()), route_of({}, AlertConfig())
('both', 'risk_desk')
>>> route_of({"route": 7}, AlertConfig())
'risk_desk'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alerts.config import AlertConfig

__all__ = ["group_labels", "route_of"]


def route_of(explanation: Mapping[str, Any], config: AlertConfig) -> str:
    """The warning's route: its explanation's ``route`` if it names one, else the default."""
    route = explanation.get("route")
    if isinstance(route, str) and route in config.routes:
        return route
    return config.default_route


def group_labels(labels: Mapping[str, str], config: AlertConfig) -> dict[str, str]:
    """The labels that make up a warning's group (``group_by``)."""
    return {name: labels.get(name, "") for name in config.group_by}
