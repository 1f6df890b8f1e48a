"""Standalone VIS-MAE pretraining stage (``nnUNetv2_vismae_pretrain``).

Data sources -> masked-autoencoder model of an encoder family -> training loop -> the encoder
checkpoint that fine-tuning loads (``<output>/encoder.safetensors``).
"""
