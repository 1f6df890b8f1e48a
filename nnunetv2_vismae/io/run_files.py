"""The names of the files a training run keeps in its output folder, known to the stages that write
them and to those that read them (torch-free, so a driver such as the demo can name them)."""

ENCODER_FILE = "encoder.safetensors"  # pretraining's encoder checkpoint, the contract fine-tuning loads
STATE_FILE = "state.pt"  # the full training state a rerun of the same command resumes from (pretrain, classify)
