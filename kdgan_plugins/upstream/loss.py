"""The plug-in losses by class name in a host whose training.loss is upstream's.

Upstream's StyleGAN2Loss takes no loss terms, no hinge and no auxiliary
image, so in such a host the hook points `loss_kwargs.class_name` here
(`CLASS_NAMES` says which name becomes which). Importing this module loads
our loss core (the harness' training/loss.py) under a private name and
FastGANLoss (kdgan_plugins/losses/fastgan_loss.py) on top of that core; the
host's own training.loss is left as it is. Spawned ranks import this module
by the class name, so each process sets itself up.

The core builds the frozen teacher and the terms, asks D for its extra
outputs (the student embedding, FastGAN's reconstructions) and ties every
one of them into each synced backward, which is what DDP needs.
"""

import os

from kdgan_plugins.upstream import harness

__all__ = ['StyleGAN2Loss', 'FastGANLoss', 'CLASS_NAMES']

# The class names the presets use -> the ones that work in an upstream tree.
CLASS_NAMES = {
    'training.loss.StyleGAN2Loss': __name__ + '.StyleGAN2Loss',
    'kdgan_plugins.losses.fastgan_loss.FastGANLoss': __name__ + '.FastGANLoss',
}

harness.install()  # The terms and the teacher import metrics.detectors when they need a file.
_core = harness.load_private(os.path.join(harness.harness_dir(), 'training', 'loss.py'), harness.PRIVATE + '.loss')
_fastgan = harness.load_private(os.path.join(harness.plugins_dir(), 'kdgan_plugins', 'losses', 'fastgan_loss.py'),
                                harness.PRIVATE + '.fastgan_loss', shadow={'training.loss': _core})

StyleGAN2Loss = _core.StyleGAN2Loss
FastGANLoss = _fastgan.FastGANLoss
