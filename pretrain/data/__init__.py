"""Pretraining data: sources of 2D slices (nnU-Net preprocessed datasets, image files, packs) mixed by weight.

No imports here: pack workers are spawned processes that import only what packing needs (no torch).
"""
