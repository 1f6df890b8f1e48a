"""Trainer names in nnU-Net's variant style, ``{Base}[_labels{P}[_seed{S}]][_{N}epochs][_{M}iters]``: built
(the benchmark, without importing torch) and parsed (``training.variants``, inside nnUNetv2_train) here only.

``_labels25`` trains on a 25% label subset (``_labels25_seed1`` on the one drawn with subset seed 1;
seed 0 is the default draw and has no suffix), ``_100epochs`` trains 100 epochs, ``_20iters`` 20
training iterations per epoch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_GRAMMAR = re.compile(
    r"^(?P<base>[A-Za-z]+?)(?:_labels(?P<labels>\d+)(?:_seed(?P<seed>\d+))?)?"
    r"(?:_(?P<epochs>\d+)epochs)?(?:_(?P<iters>\d+)iters)?$"
)


@dataclass(frozen=True)
class TrainerName:
    """A trainer base and the settings its suffixes give; ``str()`` is the name nnUNetv2_train takes."""

    base: str
    labels: int | None = None  # percentage of the fold's training cases
    seed: int = 0  # of the label subset; only with labels
    epochs: int | None = None
    iters: int | None = None  # training iterations per epoch

    def __post_init__(self):
        if self.seed and self.labels is None:
            raise ValueError(f"{self.base}: a label-subset seed needs a label percentage.")

    def __str__(self) -> str:
        name = self.base
        if self.labels is not None:
            name += f"_labels{self.labels}" + (f"_seed{self.seed}" if self.seed else "")
        if self.epochs is not None:
            name += f"_{self.epochs}epochs"
        if self.iters is not None:
            name += f"_{self.iters}iters"
        return name

    def suffixes(self) -> dict[str, int]:
        """The settings the name's suffixes give, subset seed 0 (the default draw) left out."""
        settings = {"labels": self.labels, "seed": self.seed or None, "epochs": self.epochs, "iters": self.iters}
        return {key: value for key, value in settings.items() if value is not None}


def parse_trainer_name(name: str) -> TrainerName | None:
    """``"VisMAETrainer_labels25_5epochs"`` -> TrainerName("VisMAETrainer", labels=25, epochs=5); None where
    ``name`` does not follow the grammar or asks for 0 epochs or iterations. The label percentage is left
    to the caller (``label_subsets.is_label_percentage``), who knows whether the base is a trainer."""
    match = _GRAMMAR.match(name)
    if match is None:
        return None
    numbers = {key: int(value) for key, value in match.groupdict().items() if key != "base" and value is not None}
    if any(numbers.get(key) == 0 for key in ("epochs", "iters")):
        return None
    return TrainerName(match["base"], **numbers)
