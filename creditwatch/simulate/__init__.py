"""``creditwatch simulate``: a seeded synthetic loan book as SPEC input events.

The generator (``book``) is pure and deterministic so test data, replays and
benchmarks are reproducible; publishing (``publish``) is kept apart so the
generator can be used without Kafka.
"""

from creditwatch.simulate.book import (
    BEHAVIOURS,
    BookConfig,
    book_truth,
    dumps_event,
    generate_book,
    iter_book,
    iter_jsonl,
    write_jsonl,
)

__all__ = [
    "BEHAVIOURS",
    "BookConfig",
    "book_truth",
    "dumps_event",
    "generate_book",
    "iter_book",
    "iter_jsonl",
    "write_jsonl",
]
