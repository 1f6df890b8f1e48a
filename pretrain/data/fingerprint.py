"""What a run's data are, as a short record per source kept in ``state.pt``, so that a resume notices a
corpus that changed since (files added or removed, a pack packed again from changed files, another
normalization) instead of continuing the data stream over other slices.

A source's hash covers its summary and the items its sample indices map onto, in order, with their
slice counts; a pack's array names also carry each file's size and modification time (its shard keys).
"""

from __future__ import annotations

import hashlib
import json

from pretrain.data.nnunet import NnUNetSource
from pretrain.data.pack import PackSource


def _layout(source) -> list:
    """The items of ``source`` in sample-index order and where each one's slices start."""
    if isinstance(source, PackSource):
        return [source.files, source.unit_arrays, source.offsets.tolist()]
    if isinstance(source, NnUNetSource):
        return [source.identifiers, source.offsets.tolist()]
    return [source.files, source.offsets.tolist()]


def corpus_fingerprint(sources: list) -> list[dict]:
    """Per source: its name, number of files (cases) and slices, and a hash of what it reads."""
    return [
        {
            "name": s.name,
            "files": int(s.num_items),
            "slices": len(s),
            "hash": hashlib.sha256(json.dumps([s.summary(), _layout(s)]).encode()).hexdigest()[:16],
        }
        for s in sources
    ]


def corpus_change(then: list[dict], now: list[dict]) -> str | None:
    """How the corpus of fingerprint ``now`` differs from ``then``, in a few words; None if it does not."""
    if then == now:
        return None
    if len(then) != len(now):
        return f"{len(then)} sources then, {len(now)} now"
    before, after = next((a, b) for a, b in zip(then, now) if a != b)
    if before["name"] != after["name"]:
        return f"source {before['name']} then, {after['name']} now"
    if (before["files"], before["slices"]) != (after["files"], after["slices"]):
        return (
            f"source {after['name']}: {before['files']} files and {before['slices']} slices then, "
            f"{after['files']} files and {after['slices']} slices now"
        )
    return f"source {after['name']}: the same number of files and slices, but other files, pixels or normalization"
