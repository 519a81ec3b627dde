"""Masking of account and card numbers in anything an email shows.

Email leaves the bank's systems and sits in inboxes for years, so a digest
shows no personal data beyond the customer id: explanations are free-form
(rule conditions quote event fields, detectors quote features), and any of
them may carry an account, card or phone number. Two nets catch them:

- a value under a key that names an account, card, IBAN or counterparty is
  masked whole, keeping its last four characters;
- in any text, a run of ten or more digits (spaces or dashes allowed between
  them: ``6222 0212 3456 7890``) and anything shaped like an IBAN is masked,
  keeping the last four digits. Decimal amounts (``12345678901.50``), dates
  and times (``2026-01-10 12:00``) are left alone: they are not identifiers,
  and hiding them would make the explanation useless.

>>> mask_text("card 6222 0212 3456 7890 declined")
'card ****7890 declined'
>>> mask_text("IBAN DE89370400440532013000, due 2026-01-10 12:00, amount 12345678901.50")
'IBAN ****3000, due 2026-01-10 12:00, amount 12345678901.50'
>>> mask_value("account_id", "ACC-998877")
'****8877'
>>> mask_value("threshold_days", 90), mask_value("counterparty_type", "employer")
('90', 'employer')
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["is_sensitive_key", "mask_text", "mask_value"]

_DIGIT_RUN = re.compile(r"(?<!\d)\d(?:[ -]?\d){9,}(?![\d:])(?!\.\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,30}\b")
_SENSITIVE_KEY = re.compile(
    r"(^|[._])(account|acct|iban|pan|msisdn|phone|mobile|email|passport)([._]|id|$)"
    r"|card_?(number|no)|counterparty_id|national_id|id_number",
    re.IGNORECASE,
)


def _keep_last4(text: str) -> str:
    tail = re.sub(r"[^0-9A-Za-z]", "", text)[-4:]
    return "****" + tail if len(tail) == 4 and len(text) > 4 else "****"


def mask_text(text: str) -> str:
    """``text`` with long digit runs and IBANs replaced by ``****`` + their last four."""
    text = _IBAN.sub(lambda m: _keep_last4(m.group()), text)
    return _DIGIT_RUN.sub(lambda m: _keep_last4(m.group()), text)


def is_sensitive_key(key: str) -> bool:
    """Whether values under this key name an account, card or contact (masked whole)."""
    return _SENSITIVE_KEY.search(key) is not None


def mask_value(key: str, value: Any) -> str:
    """A scalar explanation value as text that may be shown under ``key``."""
    text = value if isinstance(value, str) else str(value)
    return _keep_last4(text) if is_sensitive_key(key) else mask_text(text)
