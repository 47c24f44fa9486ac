"""Augment pipes the training loop can hold in place of ADA's.

`kdgan_plugins.augment.diffaugment.DiffAugment`: differentiable augmentation
(Zhao et al., 2020) with per-sample parameters.
"""
