"""LeCam regularisation (Tseng et al., CVPR 2021) as one loss term for any backbone.

    reg = mean(relu(D(real) - ema_fake)^2) + mean(relu(ema_real - D(fake))^2)

added to D's loss with `weight` (0.3 in the BigGAN CIFAR recipe). `ema_real`
and `ema_fake` are exponential moving averages (decay 0.9) of the batch
means of D's logits on the reals and on the fakes. During the warm-up, i.e.
before G iteration `start_iter` (1-based, as BigGAN counts), each average
simply holds the latest batch mean and the term is not added; from that
iteration on the averages decay and the term is added.

How it maps onto the phase core (training.loss.StyleGAN2Loss)
--------------------------------------------------------------
The core runs D on the fakes first and back-propagates that side, then on
the reals. So on the fake side the average of the fakes is updated with the
current batch and the fake half of the term reads `ema_real` as the last
real pass left it (one D step old); on the real side `ema_real` is updated
first and the real half reads the `ema_fake` just updated. Each half goes
to its own side's loss (reported as Loss/D/<name>_real and _fake). With
several accumulation rounds per step (batch_gpu < batch) every round
updates the averages; with several processes each keeps its own.

Iterations are counted in real images shown to D (over all processes):
`iter_kimg` is the thousands of images one G iteration takes (batch times
D steps per G step; train.py fills it in), so iteration k starts after
(k - 1) * iter_kimg * 1000 images. The averages and the count are carried
across an exact resume.
"""

import torch
import torch.nn.functional as F

from kdgan_plugins.losses.terms import LossTerm

__all__ = ['LeCam', 'lecam_halves']


def lecam_halves(real_logits, fake_logits, ema_real, ema_fake):
    """The two halves of the regulariser, elementwise: (relu(D(real) - ema_fake)^2,
    relu(ema_real - D(fake))^2). Either logits may be None (that half is then None)."""
    real = None if real_logits is None else F.relu(real_logits - ema_fake).square()
    fake = None if fake_logits is None else F.relu(ema_real - fake_logits).square()
    return real, fake


def _world_size():
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class LeCam(LossTerm):
    """See the module docstring. `weight` > 0; `decay` of the averages; `start_iter` the
    first G iteration (1-based) with the term on; `iter_kimg` kimg per G iteration."""

    def __init__(self, loss, weight=0.3, decay=0.9, start_iter=1000, iter_kimg=None, name='lecam'):
        super().__init__(loss, name)
        if not float(weight) > 0:
            raise ValueError(f'LeCam weight must be positive, got {weight} (leave the term out to turn it off)')
        if not 0 <= float(decay) < 1:
            raise ValueError(f'LeCam decay must be in [0, 1), got {decay}')
        if int(start_iter) > 1 and iter_kimg is None:
            raise ValueError('LeCam needs iter_kimg (thousands of real images per G iteration: batch x D steps '
                             'per G step) to know when iteration start_iter begins; train.py sets it')
        self.weight = float(weight)
        self.decay = float(decay)
        self.start_iter = int(start_iter)
        self.start_nimg = 0 if self.start_iter <= 1 else (self.start_iter - 1) * float(iter_kimg) * 1000
        device = loss.device
        self.ema_real = torch.zeros([], device=device)
        self.ema_fake = torch.zeros([], device=device)
        self.nimg = torch.zeros([], dtype=torch.float64)   # real images seen, all processes

    @property
    def active(self):
        """True from iteration start_iter on: the averages decay and the term is added."""
        return float(self.nimg) >= self.start_nimg

    def _track(self, ema, logits):
        batch_mean = logits.detach().float().mean()
        ema.copy_(ema.lerp(batch_mean, 1 - self.decay) if self.active else batch_mean)

    def D_terms(self, side, res, c, step):
        logits = res.logits
        active = self.active
        if side == 'gen':
            self._track(self.ema_fake, logits)
            _, fake = lecam_halves(None, logits, self.ema_real.to(logits.dtype), None)
            return {f'{self.name}_fake': fake * self.weight} if active else {}
        self._track(self.ema_real, logits)
        self.nimg += logits.shape[0] * _world_size()
        real, _ = lecam_halves(logits, None, None, self.ema_fake.to(logits.dtype))
        return {f'{self.name}_real': real * self.weight} if active else {}

    def state_dict(self):
        return {'ema_real': self.ema_real.clone(), 'ema_fake': self.ema_fake.clone(), 'nimg': self.nimg.clone()}

    def load_state_dict(self, state):
        state = dict(state)
        for key in ('ema_real', 'ema_fake', 'nimg'):
            if key not in state:
                raise KeyError(f'loss term {self.name!r}: resume state lacks {key!r}')
            getattr(self, key).copy_(torch.as_tensor(state.pop(key)))
        if state:
            raise KeyError(f'loss term {self.name!r}: unexpected state entries {sorted(state)}')
