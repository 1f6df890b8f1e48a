"""nnUNetv2_vismae_plan: VisMAE plans derived from a dataset's nnU-Net plans."""
