"""Inhibition: a stronger warning that is firing keeps weaker ones on the same loan quiet.

A loan classified as loss does not also page for 30 days past due. The
sources are the customer's firing dedup records (recorded even when they were
themselves silenced or inhibited, as in Alertmanager: muting a page does not
make its condition go away), never the target itself. Inhibition is checked
when a warning arrives and again when its group is flushed, because a DPD
tick emits the arrears warning before the class change it causes; the group
wait gives the stronger one time to arrive.

>>> from alerts.config import InhibitRule
>>> from alerts.matchers import Matcher
>>> rule = InhibitRule(name="loss-mutes-dpd", source=[Matcher.parse("loan_class=loss")],
...                    target=[Matcher.parse("code=dpd_30")])
>>> inhibitor = Inhibitor((rule,))
>>> target = {"customer_id": "C1", "loan_id": "L1", "code": "dpd_30", "severity": "warning"}
>>> source = {"customer_id": "C1", "loan_id": "L1", "loan_class": "loss", "severity": "critical"}
>>> inhibitor.inhibited_by(target, "C1:dpd30", [("C1:class", source)])
'loss-mutes-dpd'
>>> inhibitor.inhibited_by(target, "C1:dpd30", [("C1:class", {**source, "loan_id": "L2"})])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from alerts.config import InhibitRule
from alerts.matchers import all_match
from alerts.model import SEVERITY_RANK

__all__ = ["Inhibitor"]


class Inhibitor:
    """Applies the configured inhibit rules."""

    def __init__(self, rules: Iterable[InhibitRule]) -> None:
        self.rules = tuple(rules)

    def inhibited_by(
        self,
        target: Mapping[str, str],
        target_key: str,
        sources: Iterable[tuple[str, Mapping[str, str]]],
    ) -> str | None:
        """Name of the first rule that mutes ``target``, or None.

        ``sources`` are (dedup key, labels) of the customer's firing warnings;
        the one whose dedup key is ``target_key`` is the target itself and is
        skipped.
        """
        rules = [r for r in self.rules if all_match(r.target, target)]
        if not rules:
            return None
        candidates = [(key, labels) for key, labels in sources if key != target_key]
        target_rank = SEVERITY_RANK.get(target.get("severity", ""), -1)
        for rule in rules:
            for _key, labels in candidates:
                if not all_match(rule.source, labels):
                    continue
                if any(labels.get(n, "") != target.get(n, "") for n in rule.equal):
                    continue
                if rule.stronger_only and SEVERITY_RANK.get(labels.get("severity", ""), -1) <= (
                    target_rank
                ):
                    continue
                return rule.name
        return None
