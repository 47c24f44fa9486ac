"""FastGAN's loss (Liu et al., ICLR 2021) as the shared loss core with other defaults.

`FastGANLoss` is `training.loss.StyleGAN2Loss` with:

* `adversarial='hinge'`: D real relu(m - D(x)), D fake relu(m + D(G(z))),
  G -D(G(z)), m = 0.8 + 0.2 U(0, 1) drawn per element of D's [N, 50] logit
  map (the official `rand_like(pred)`); every term is averaged over all
  logits of the batch (hinge_margin=(0.8, 1.0); (1, 1) gives the plain hinge);
* `G_aux=True`: G.synthesis returns (img, img_128); the augment pipe is
  applied independently to each of the two images (the official DiffAugment
  of both outputs) and D reads `D(img_aug, c, img_small=img_128_aug)`. Reals
  go to D alone, which makes their small image by nearest resizing of the
  augmented real (the official path);
* the reconstruction term by default: `terms={'recon': {class_name:
  kdgan_plugins.losses.terms.Reconstruction, kind: 'lpips', weight: 1}}`
  (see Reconstruction for kinds, weight and the batch reduction). Passing
  `terms` replaces the default set (the presets give it explicitly, so that a
  `--loss=kdgan.*` preset can add its terms next to it);
* no R1 (r1_gamma=0), no path length (pl_weight=0: FastGAN's mapping passes z
  through and has no parameters), no style mixing during training;
* `fake_reuse=True`: one G forward per minibatch, its fakes serving D's step
  and then G's (the official loop's order: D first); False gives the
  harness's previous order (G's phase first, each phase drawing its own fakes);
* `precision`: 'fp32' here (machine-independent numerics for direct users);
  the fastgan presets pass 'auto': bf16 autocast where the CPU computes bf16
  natively, fp32 otherwise (see training.loss).
"""

from training.loss import StyleGAN2Loss

__all__ = ['FastGANLoss', 'RECON_CLASS', 'default_terms']

RECON_CLASS = 'kdgan_plugins.losses.terms.Reconstruction'


def default_terms(recon='lpips', weight=1.0):
    """The FastGAN loss's terms as data: {'recon': {...}}."""
    return {'recon': {'class_name': RECON_CLASS, 'kind': recon, 'weight': float(weight)}}


class FastGANLoss(StyleGAN2Loss):
    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, style_mixing_prob=0, r1_gamma=0,
                 pl_batch_shrink=2, pl_decay=0.01, pl_weight=0, adversarial='hinge', hinge_margin=(0.8, 1.0),
                 G_aux=True, terms=None, precision='fp32', fake_reuse=True, **kwargs):
        if pl_weight:
            raise ValueError('FastGANLoss: path length regularisation needs a mapping network with parameters; '
                             'FastGAN passes z through, so pl_weight must be 0')
        if terms is None:
            terms = default_terms()
        super().__init__(device, G_mapping, G_synthesis, D, augment_pipe=augment_pipe,
                         style_mixing_prob=style_mixing_prob, r1_gamma=r1_gamma, pl_batch_shrink=pl_batch_shrink,
                         pl_decay=pl_decay, pl_weight=pl_weight, adversarial=adversarial, hinge_margin=hinge_margin,
                         G_aux=G_aux, terms=terms, precision=precision, fake_reuse=fake_reuse, **kwargs)
