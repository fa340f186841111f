"""usseg.train: data sets, splits, synthetic phantom, augmentation, model, loop, evaluation (PyTorch + MONAI)."""
