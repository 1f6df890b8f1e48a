"""nnunetv2_vismae: VIS-MAE masked-autoencoder pretraining for nnU-Net v2."""

import warnings

# timm imports all its models, one of which uses a deprecated torch.jit API; not ours to fix.
warnings.filterwarnings("ignore", message=r"`torch.jit.interface` is deprecated")
