"""Training: the config, augmentation, targets and the training loop."""
