"""Classification fine-tuning of the pretrained Swin encoder: ``nnUNetv2_vismae_classify``.

data.py       image lists from a CSV or class subfolders, stratified split, nested label subsets
inputs.py     reading, normalizing (as in pretraining) and resizing images to tensors
model.py      the encoder plus a pooled linear head, built from scratch or from a checkpoint
augment.py    batch augmentation (flips, small rotation and scaling, intensity jitter)
train.py      the training loop: resumable, best epoch by validation AUC
inference.py  probabilities of a trained model, shared by validation and predict
predict.py    a saved model folder applied to new images
metrics.py    AUC, accuracy, balanced accuracy, F1, confusion matrix
report.py     metrics.json, report.md, confusion_matrix.png, training_curve.png
benchmark.py  pretrained vs from-scratch arms at several label fractions
cli.py        the command line
"""
