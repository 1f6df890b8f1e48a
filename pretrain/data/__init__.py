"""Pretraining data: sources of 2D slices (nnU-Net preprocessed datasets, image files) mixed by weight."""

from pretrain.data.files import FileSource
from pretrain.data.mixture import PatchDataset, SampleIndexSampler
from pretrain.data.nnunet import NnUNetSource

__all__ = ["FileSource", "NnUNetSource", "PatchDataset", "SampleIndexSampler"]
