"""Losses for the training loop: the phase machinery and the StyleGAN2 loss.

The training loop knows nothing about a method: each minibatch it calls
`loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, sync, gain)`
for the phases Gmain/Greg/Gboth/Dmain/Dreg/Dboth and steps the optimisers.

`StyleGAN2Loss` is written as one core that plug-in losses extend by
overriding small hooks instead of copying the phases:

- `run_G(z, c, sync)` -> (images, ws): mapping (+ style mixing) and synthesis.
- `run_D(img, c, sync, side)` -> EasyDict(logits=..., img_aug=..., ...): the
  augment pipe, then D. A subclass that needs more from D (student features,
  reconstructions) asks D for it here and stores it in the returned dict.
- `G_adv_term(gen_logits)`, `D_adv_term_gen(gen_logits)`,
  `D_adv_term_real(real_logits)`: per-sample adversarial terms
  (non-saturating logistic here; a hinge loss overrides these three).
- `extra_D_terms(side, res, c)` -> {name: tensor}: extra terms added to the
  Dmain loss of one side ('gen' or 'real'), given that side's `run_D` result.
  Each is averaged, reported as `Loss/D/<name>` and back-propagated with the
  side's adversarial term. The sides are separate because under
  DistributedDataParallel every D forward must be followed by its own backward
  (the gen pass runs without gradient sync, the real pass with it).
- `state_dict()` / `load_state_dict()`: tensors the loss owns across steps
  (pl_mean here), saved by the exact-resume checkpoint.
"""

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import misc
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


class Loss:
    """Interface the training loop calls; see the module docstring."""

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        raise NotImplementedError()

    def state_dict(self):
        """Tensors to carry across an exact resume (name -> tensor)."""
        return {}

    def load_state_dict(self, state):
        if state:
            raise KeyError('{} holds no state, got {}'.format(type(self).__name__, sorted(state)))


class StyleGAN2Loss(Loss):
    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, style_mixing_prob=0.9, r1_gamma=10,
                 pl_batch_shrink=2, pl_decay=0.01, pl_weight=2):
        super().__init__()
        self.device = torch.device(device)
        self.G_mapping = G_mapping
        self.G_synthesis = G_synthesis
        self.D = D
        self.augment_pipe = augment_pipe
        self.style_mixing_prob = float(style_mixing_prob)
        self.r1_gamma = float(r1_gamma)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        self.pl_weight = float(pl_weight)
        self.pl_mean = torch.zeros([], device=self.device)   # Running mean of path lengths.

    # ------------------------------------------------------------------------
    # State for exact resume.

    def state_dict(self):
        return {'pl_mean': self.pl_mean.detach().clone()}

    def load_state_dict(self, state):
        state = dict(state)
        pl_mean = state.pop('pl_mean', None)
        if pl_mean is not None:
            self.pl_mean.copy_(torch.as_tensor(pl_mean).to(self.pl_mean))
        if state:
            raise KeyError('{}: unexpected state entries {}'.format(type(self).__name__, sorted(state)))

    # ------------------------------------------------------------------------
    # Hooks.

    def run_G(self, z, c, sync):
        """Latents -> images. Returns (img, ws)."""
        with misc.ddp_sync(self.G_mapping, sync):
            ws = self.G_mapping(z, c)
            if self.style_mixing_prob > 0:
                ws = self._mix_styles(ws, z, c)
        with misc.ddp_sync(self.G_synthesis, sync):
            img = self.G_synthesis(ws)
        return img, ws

    def _mix_styles(self, ws, z, c):
        """With probability style_mixing_prob, the ws from a random cutoff on come from
        another latent. Drawn on the device, without a host sync."""
        with torch.autograd.profiler.record_function('style_mixing'):
            num_ws = ws.shape[1]
            cutoff = torch.randint(1, max(num_ws, 2), [], device=ws.device)
            use_mix = torch.rand([], device=ws.device) < self.style_mixing_prob
            cutoff = torch.where(use_mix, cutoff, torch.full_like(cutoff, num_ws))
            ws_other = self.G_mapping(torch.randn_like(z), c, skip_w_avg_update=True)
            take_other = (torch.arange(num_ws, device=ws.device) >= cutoff).reshape(1, num_ws, 1)
            return torch.where(take_other, ws_other, ws)

    def run_D(self, img, c, sync, side):
        """Augment, then D. `side` is 'gen' or 'real' (for subclasses that treat them
        differently). Returns an EasyDict with at least `logits` and `img_aug`."""
        img_aug = self.augment_pipe(img) if self.augment_pipe is not None else img
        with misc.ddp_sync(self.D, sync):
            logits = self.D(img_aug, c)
        return dnnlib.EasyDict(logits=logits, img_aug=img_aug)

    def G_adv_term(self, gen_logits):
        return F.softplus(-gen_logits)      # -log(sigmoid(D(G(z)))): non-saturating.

    def D_adv_term_gen(self, gen_logits):
        return F.softplus(gen_logits)       # -log(1 - sigmoid(D(G(z)))).

    def D_adv_term_real(self, real_logits):
        return F.softplus(-real_logits)     # -log(sigmoid(D(x))).

    def extra_D_terms(self, side, res, c):
        """Extra Dmain terms for one side; {} in plain StyleGAN2."""
        return {}

    # ------------------------------------------------------------------------
    # Phases.

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        if phase not in PHASES:
            raise ValueError('unknown phase {!r}; expected one of {}'.format(phase, ', '.join(PHASES)))
        do_Gmain = phase in ('Gmain', 'Gboth')
        do_Dmain = phase in ('Dmain', 'Dboth')
        do_Gpl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        do_Dr1 = phase in ('Dreg', 'Dboth') and self.r1_gamma != 0

        if do_Gmain:
            self._G_main(gen_z, gen_c, sync=(sync and not do_Gpl), gain=gain)
        if do_Gpl:
            self._G_pl(gen_z, gen_c, sync=sync, gain=gain)
        loss_Dgen = None
        if do_Dmain:
            loss_Dgen = self._D_gen(gen_z, gen_c, gain=gain)
        if do_Dmain or do_Dr1:
            self._D_real(real_img, real_c, sync=sync, gain=gain, do_main=do_Dmain, do_r1=do_Dr1, loss_Dgen=loss_Dgen)

    def _G_main(self, gen_z, gen_c, sync, gain):
        with torch.autograd.profiler.record_function('Gmain_forward'):
            gen_img, _ws = self.run_G(gen_z, gen_c, sync=sync)
            gen = self.run_D(gen_img, gen_c, sync=False, side='gen')
            training_stats.report('Loss/scores/fake', gen.logits)
            training_stats.report('Loss/signs/fake', gen.logits.sign())
            loss_G = self.G_adv_term(gen.logits)
            training_stats.report('Loss/G/loss', loss_G)
        with torch.autograd.profiler.record_function('Gmain_backward'):
            loss_G.mean().mul(gain).backward()

    def _G_pl(self, gen_z, gen_c, sync, gain):
        with torch.autograd.profiler.record_function('Gpl_forward'):
            n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n], sync=sync)
            # Random image-space direction, scaled so the length is resolution independent.
            pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
            with torch.autograd.profiler.record_function('pl_grads'), conv2d_gradfix.no_weight_gradients():
                pl_grads = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                               create_graph=True, only_inputs=True)[0]
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
            self.pl_mean.copy_(pl_mean.detach())
            pl_penalty = (pl_lengths - pl_mean).square()
            training_stats.report('Loss/pl_penalty', pl_penalty)
            loss_Gpl = pl_penalty * self.pl_weight
            training_stats.report('Loss/G/reg', loss_Gpl)
        with torch.autograd.profiler.record_function('Gpl_backward'):
            # The zero-weighted image term ties every synthesis output to the loss, so that
            # DDP sees all parameters take part in this backward.
            (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

    def _D_gen(self, gen_z, gen_c, gain):
        with torch.autograd.profiler.record_function('Dgen_forward'):
            gen_img, _ws = self.run_G(gen_z, gen_c, sync=False)
            gen = self.run_D(gen_img, gen_c, sync=False, side='gen')
            training_stats.report('Loss/scores/fake', gen.logits)
            training_stats.report('Loss/signs/fake', gen.logits.sign())
            loss_Dgen = self.D_adv_term_gen(gen.logits)
            loss = loss_Dgen.mean() + self._sum_extra_terms('gen', gen, gen_c)
        with torch.autograd.profiler.record_function('Dgen_backward'):
            loss.mul(gain).backward()
        return loss_Dgen.detach()   # Reported as part of Loss/D/loss with the real side.

    def _D_real(self, real_img, real_c, sync, gain, do_main, do_r1, loss_Dgen=None):
        name = 'Dreal_Dr1' if (do_main and do_r1) else 'Dreal' if do_main else 'Dr1'
        with torch.autograd.profiler.record_function(name + '_forward'):
            # R1 differentiates D with respect to the image *before* augmentation.
            real_img_tmp = real_img.detach().requires_grad_(do_r1)
            real = self.run_D(real_img_tmp, real_c, sync=sync, side='real')
            training_stats.report('Loss/scores/real', real.logits)
            training_stats.report('Loss/signs/real', real.logits.sign())

            loss = real.logits.sum() * 0   # Keeps every D output in the graph (DDP).
            if do_main:
                loss_Dreal = self.D_adv_term_real(real.logits)
                if loss_Dgen is not None and loss_Dgen.shape == loss_Dreal.shape:
                    training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)
                else:   # Batches of different sizes: report the two parts side by side.
                    training_stats.report('Loss/D/loss', torch.cat([t.flatten() for t in (loss_Dgen, loss_Dreal)
                                                                    if t is not None]))
                loss = loss + loss_Dreal.mean() + self._sum_extra_terms('real', real, real_c)

            if do_r1:
                with torch.autograd.profiler.record_function('r1_grads'), conv2d_gradfix.no_weight_gradients():
                    r1_grads = torch.autograd.grad(outputs=[real.logits.sum()], inputs=[real_img_tmp],
                                                   create_graph=True, only_inputs=True)[0]
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                training_stats.report('Loss/r1_penalty', r1_penalty)
                training_stats.report('Loss/D/reg', loss_Dr1)
                loss = loss + loss_Dr1.mean()
        with torch.autograd.profiler.record_function(name + '_backward'):
            loss.mul(gain).backward()

    def _sum_extra_terms(self, side, res, c):
        total = 0
        for term_name, value in self.extra_D_terms(side, res, c).items():
            training_stats.report('Loss/D/' + term_name, value)
            total = total + value.mean()
        return total
