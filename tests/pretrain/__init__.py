"""Tests of the standalone pretraining stage (``pretrain/``)."""
