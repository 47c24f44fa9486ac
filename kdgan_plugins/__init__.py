"""kdgan plug-ins: FastGAN networks, DiffAugment, and KD-DLGAN's distillation losses.

The plug-ins attach to any StyleGAN2-ADA tree (ours in ``stylegan2_ada/`` or an
upstream checkout with ``patches/`` applied) by class name, so every method is
trained by the same loop, augment pipe and metrics.
"""

__version__ = "0.1.0"
