"""Who to cite for pretrained weights: the ``citations`` and ``license`` entries of an encoder checkpoint.

``citations`` keeps the form nnssl's published checkpoints use (and nnU-Net master's ``PretrainedTrainer``
prints): a list of ``{"type": ..., "name": ..., "apa_citations": [...]}`` (or ``bibtex_citations``).
Converting records them; loading the checkpoint for fine-tuning prints them in the training log.
"""

from __future__ import annotations

CITATIONS = "citations"
LICENSE = "license"
_PAPER_KEYS = ("apa_citations", "bibtex_citations")
_RULE = "#" * 71


def _texts(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def usable_citations(value) -> list[dict]:
    """The entries of a file's ``citations`` in the known form, as plain JSON; anything else is left out
    (it is text to print, never something to run or trust)."""
    entries = []
    for entry in value if isinstance(value, (list, tuple)) else ():
        if not isinstance(entry, dict):
            continue
        kept = {k: entry[k] for k in ("type", "name") if isinstance(entry.get(k), str)}
        kept.update({k: list(entry[k]) for k in _PAPER_KEYS if _texts(entry.get(k))})
        if any(kept.get(k) for k in _PAPER_KEYS):
            entries.append(kept)
    return entries


def add_attribution(metadata: dict, license_text: str | None, cite, source_name: str) -> dict:
    """``metadata`` with the licence and the citations given at conversion (unchanged when neither is given)."""
    if license_text:
        metadata[LICENSE] = license_text
    if cite:
        given = {"type": "given at conversion", "name": source_name, "apa_citations": list(cite)}
        metadata[CITATIONS] = [*metadata.get(CITATIONS, []), given]
    return metadata


def citation_notice(metadata: dict) -> str | None:
    """The papers to cite for a checkpoint's weights (framed as nnU-Net master frames them) and their licence;
    None without either."""
    from .cli import printable  # a crafted file must not drive the terminal

    entries = usable_citations(metadata.get(CITATIONS))
    license_text = metadata.get(LICENSE)
    if not entries and not isinstance(license_text, str):
        return None
    lines = [_RULE] + (["Please cite the associated papers when using pre-trained weights:"] if entries else [])
    for entry in entries:
        lines.append(f"{entry.get('type', '?')} used '{entry.get('name', '?')}'. Associated paper(s):")
        lines += next(entry[k] for k in _PAPER_KEYS if entry.get(k))
    if isinstance(license_text, str):
        lines.append(f"The weights are licensed under {license_text}.")
    lines.append(_RULE)
    return "\n".join(printable(line) for line in lines)
