"""What the optimizers of fine-tuning, classification and pretraining share: parameter groups (weight
decay, layer-wise lr decay) and learning-rate schedules."""
