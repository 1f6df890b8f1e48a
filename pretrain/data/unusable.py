"""The run's account of unusable files: counted by reason, summarized, and a stop above a share.

Files skipped when the manifest was built and files found bad while loading (reported by the
data-loader workers with each batch) are counted once each, by path. The share is taken over all
files (and nnU-Net cases) of all sources; above ``--max-unusable`` the run stops with one sentence.
"""

from __future__ import annotations

import json
from collections import Counter

from nnunetv2_vismae.io.atomic import write_json_atomic
from pretrain.data.screening import REASONS
from pretrain.errors import PretrainUserError

PRINTED_AT_LOAD = 10  # new bad files announced while training; the rest only in the summary


class UnusableFiles:
    def __init__(self, total: int, max_share: float, announce=print):
        self.total, self.max_share, self.announce = total, max_share, announce
        self.entries: dict[str, tuple[str, str, str]] = {}  # path -> (reason, detail, when)
        self.exhausted: str | None = None  # set when a sample found nothing usable in all its draws

    @classmethod
    def from_sources(cls, sources: list, max_share: float, announce=print) -> "UnusableFiles":
        tally = cls(sum(s.num_items for s in sources), max_share, announce)
        for source in sources:
            for path, reason, detail in getattr(source, "skipped", []):
                tally.entries[path] = (reason, detail, "manifest")
        return tally

    @property
    def share(self) -> float:
        return len(self.entries) / max(self.total, 1)

    def exceeded(self) -> bool:
        return self.exhausted is not None or self.share > self.max_share

    def counts(self) -> Counter:
        return Counter(reason for reason, _, _ in self.entries.values())

    def describe(self) -> str:
        """``3 of 20 files (15.0%) are unusable: 2 empty file (0 bytes), 1 NaN or Inf pixels``."""
        parts = ", ".join(f"{n} {REASONS[r]}" for r, n in self.counts().most_common())
        return f"{len(self.entries)} of {self.total} files ({100 * self.share:.1f}%) are unusable" + (
            f": {parts}" if parts else ""
        )

    def add_reports(self, reports) -> None:
        """Record what the workers sent with a batch: JSON lists of [path, reason, detail] (or the
        marker ``["*exhausted*", message, ""]``)."""
        for text in reports:
            for path, reason, detail in json.loads(text) if text else []:
                if path == "*exhausted*":
                    self.exhausted = reason
                elif path not in self.entries:
                    self.entries[path] = (reason, detail, "load")
                    if sum(w == "load" for _, _, w in self.entries.values()) <= PRINTED_AT_LOAD:
                        self.announce(
                            f"Skipping unusable {path}: {REASONS[reason]}" + (f" ({detail})." if detail else ".")
                        )

    def stop_message(self, listing: str | None = None) -> str:
        listed = f"; all are listed in {listing}" if listing and self.entries else ""
        if self.exhausted is not None:
            return self.exhausted.removesuffix(".") + listed + "."
        path, (reason, detail, _) = next(iter(self.entries.items()))
        return (
            f"{self.describe()}, more than --max-unusable {self.max_share:g} allows (e.g. {path}: "
            f"{REASONS[reason]}){listed}; remove or fix them, or raise --max-unusable."
        )

    def check(self, listing: str | None = None) -> None:
        """Stop (PretrainUserError) above the share; first write the full list to ``listing``."""
        if self.exceeded():
            if listing and self.entries:
                self.write(listing)
            raise PretrainUserError(self.stop_message(listing))

    def to_json(self) -> dict:
        return {
            "total": self.total,
            "unusable": len(self.entries),
            "by_reason": dict(self.counts()),
            "files": [
                {"path": p, "reason": r, "detail": d, "found_at": w} for p, (r, d, w) in sorted(self.entries.items())
            ],
        }

    def write(self, path: str) -> None:
        write_json_atomic(path, self.to_json(), indent=1)
