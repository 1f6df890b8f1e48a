"""The checkpoint metadata schema: the type and bounds of every entry the code consumes.

Checked once, by the checkpoint reader (and the writer), before anything is built from the file,
so that nothing downstream (inspect, plan, classify, benchmark, the trainers) meets a crafted
value. A check returns *problems*: one sentence each, naming the entry, its value and what was
expected::

    encoder_config.patch_size is 0, expected an integer from 1 to 64.

Values are shown as ASCII JSON and shortened, so a crafted file can put neither control
characters nor megabytes on a terminal. The family checks its ``encoder_config`` (see
``families.py``); ``normalization_problems`` checks the input normalization and ``SPATIAL_DIMS`` the
number of spatial dimensions, the other entries that code reads. Further entries (steps, data
sources, ...) are free-form JSON that is only printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

from nnunetv2_vismae.errors import shown


# ------------------------------------------------------------------------------------ rules
@dataclass(frozen=True)
class Rule:
    """What one entry must be: ``accepts(value)``, described as ``expected`` ("an integer from 1 to 64")."""

    expected: str
    accepts: Callable[[object], bool]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int, high: int) -> Rule:
    return Rule(f"an integer from {low} to {high}", lambda v: _is_int(v) and low <= v <= high)


def number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """A finite number in the interval from ``low`` to ``high``, either end open or closed."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def accepts(v) -> bool:
        return _is_number(v) and (low < v if low_open else low <= v) and (v < high if high_open else v <= high)

    return Rule(f"a number in {interval}", accepts)


def any_number() -> Rule:
    return Rule("a finite number", _is_number)


def positive() -> Rule:
    return Rule("a positive finite number", lambda v: _is_number(v) and v > 0)


def number_pair(what: str) -> Rule:
    """Two numbers (infinite ones too), the first smaller, described as ``[what]`` ("[low, high]")."""

    def real(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)

    return Rule(
        f"[{what}], two numbers, the first smaller",
        lambda v: isinstance(v, list) and len(v) == 2 and all(map(real, v)) and v[0] < v[1],
    )


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def text() -> Rule:
    return Rule("a string", lambda v: isinstance(v, str))


def one_of(values) -> Rule:
    values = tuple(values)
    return Rule(f"one of {', '.join(map(shown, values))}", lambda v: isinstance(v, str) and v in values)


def list_of(item: Rule, min_len: int, max_len: int | None = None) -> Rule:
    """A list of ``min_len`` to ``max_len`` (no limit: None) items that each satisfy ``item``."""
    count = (
        f"at least {min_len}" if max_len is None else f"{min_len}" if max_len == min_len else f"{min_len} to {max_len}"
    )
    return Rule(
        f"a list of {count} entries, each {item.expected}",
        lambda v: (
            isinstance(v, list)
            and min_len <= len(v)
            and (max_len is None or len(v) <= max_len)
            and all(item.accepts(x) for x in v)
        ),
    )


def optional(rule: Rule) -> Rule:
    """``rule`` or JSON null."""
    return Rule(f"{rule.expected} or null", lambda v: v is None or rule.accepts(v))


def json_object() -> Rule:
    return Rule("a JSON object", lambda v: isinstance(v, dict))


# the top-level spatial_dims entry of a checkpoint (absent: 2)
SPATIAL_DIMS = Rule("2 or 3", lambda v: _is_int(v) and v in (2, 3))


def entry_problems(obj, where: str, rules: Mapping[str, Rule], required=()) -> list[str]:
    """Problems of the JSON object ``obj`` (shown as ``where``): not an object, a ``required``
    entry missing, an entry no rule knows, or an entry its rule does not accept."""
    if not isinstance(obj, dict):
        return [f"{where} is {shown(obj)}, expected a JSON object."]
    problems = [
        f"{where} lacks the entry {key!r}, expected {rules[key].expected}." for key in required if key not in obj
    ]
    for key, value in obj.items():
        rule = rules.get(key)
        if rule is None:
            problems.append(f"{where} has the unknown entry {shown(key)}, expected only {', '.join(rules)}.")
        elif not rule.accepts(value):
            problems.append(f"{where}.{key} is {shown(value)}, expected {rule.expected}.")
    return problems


# ---------------------------------------------------------------------------- normalization
PER_SOURCE = "per_source"
_DESCRIPTION = {"applied": text(), "description": text()}
_CHANNELS = integer(1, 64)
_STATS = Rule(
    "[mean, std], two finite numbers, std > 0",
    lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)) and v[1] > 0,
)
_IMAGENET = {
    "mean": list_of(any_number(), 1, 64),
    "std": list_of(positive(), 1, 64),
    "intensity_range": number_pair("low, high"),
    "source_in_channels": _CHANNELS,
    "in_channels": _CHANNELS,
    **_DESCRIPTION,
}
_FINGERPRINT = Rule(
    "an object of per-channel objects of finite numbers",
    lambda v: isinstance(v, dict) and all(isinstance(c, dict) and all(map(_is_number, c.values())) for c in v.values()),
)
_CT_ENTRIES = {"ct_clip": optional(number_pair("low, high")), "ct_stats": optional(_STATS), **_DESCRIPTION}
_CT_FINGERPRINT = ("percentile_00_5", "percentile_99_5", "mean", "std")

# scheme -> (rules of its entries besides "scheme", entries required of a single source's
# normalization); written by pretraining (io.normalization, pretrain.data.nnunet) and convert
NORMALIZATION_SCHEMES: dict[str, tuple[dict[str, Rule], tuple[str, ...]]] = {
    "zscore": (_CT_ENTRIES, ()),  # a CT window given with zscore is recorded, not applied
    "ct": (_CT_ENTRIES, ()),
    "nnunet": (
        {
            "normalization_schemes": list_of(text(), 1, 64),
            "use_mask_for_norm": list_of(boolean(), 0, 64),
            "foreground_intensity_properties_per_channel": optional(_FINGERPRINT),
            **_DESCRIPTION,
        },
        ("normalization_schemes",),
    ),
    "mixed": (dict(_DESCRIPTION), (PER_SOURCE,)),
    "imagenet_rgb": (_IMAGENET, ("mean", "std")),
    "imagenet_rgb_folded": (
        {**_IMAGENET, "folded_mean": any_number(), "folded_std": positive()},
        ("mean", "std", "folded_mean", "folded_std"),
    ),
}
_SCHEME = one_of(NORMALIZATION_SCHEMES)


def normalization_problems(norm, where: str = "normalization", nested: bool = False) -> list[str]:
    """Problems of a ``normalization`` entry: a JSON object with a known ``scheme`` and that
    scheme's entries. At the top level, ``per_source`` may list the normalization of each data
    source (pretraining writes that); the scheme's required entries are then in each source."""
    if not isinstance(norm, dict):
        return [f'{where} is {shown(norm)}, expected a JSON object such as {{"scheme": "zscore"}}.']
    if not _SCHEME.accepts(norm.get("scheme")):
        return [f"{where}.scheme is {shown(norm.get('scheme'))}, expected {_SCHEME.expected}."]
    rules, required = NORMALIZATION_SCHEMES[norm["scheme"]]
    rules = {"scheme": _SCHEME, **rules}
    if not nested:
        rules[PER_SOURCE] = list_of(json_object(), 1)
    summary = not nested and PER_SOURCE in norm  # the sources hold the scheme's entries
    problems = entry_problems(norm, where, rules, () if summary else required)
    if problems:
        return problems
    for i, source in enumerate(norm.get(PER_SOURCE, []) if not nested else []):
        problems += normalization_problems(source, f"{where}.{PER_SOURCE}[{i}]", nested=True)
    return problems + _ct_fingerprint_problems(norm, where)


def _ct_fingerprint_problems(norm: dict, where: str) -> list[str]:
    """nnU-Net's CTNormalization of channel 0 needs that channel's fingerprint statistics."""
    if (norm.get("normalization_schemes") or [None])[0] != "CTNormalization":
        return []
    key = "foreground_intensity_properties_per_channel"
    if all(k in (norm.get(key) or {}).get("0", {}) for k in _CT_FINGERPRINT):
        return []
    return [
        f'{where}.{key} is {shown(norm.get(key))}, expected channel "0" to hold '
        f"{', '.join(_CT_FINGERPRINT)} (CTNormalization needs them)."
    ]
