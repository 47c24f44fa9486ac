"""KD-DLGAN's distillation terms (Cui et al., CVPR 2023): AGKD and CGKD.

Both are terms of the loss core (`kdgan_plugins.losses.terms`) added to the D
phase of whatever loss the backbone uses (StyleGAN2Loss, FastGAN's), one
implementation each. Notation (docs/METHODS.md):

* t(x): the frozen teacher's image embedding (`loss.get_teacher()`, a
  CLIPTeacher) of the SAME augmented images D sees, computed under no_grad;
* s(x): the student embedding, `D(img, c, features=True)[1]` (a
  KDDiscriminator wrapping the cfg's D); the only path of gradient;
* T: the teacher's text embeddings of the K prompts [K, d], computed once.

AGKD (`AGKD(loss, weight=10, p=0.7, dist='l2', seed=0)`):
    L_KD  = d(t(x), s(x)) + d(t(G(z)), s(G(z)))
    L_AGG = d(t(x), s(G(z))) + d(t(G(z)), s(x))      (real i paired with fake i)
    L_AGKD = weight * (L_KD + [fired] * L_AGG),  fired ~ Bernoulli(p)
  One Bernoulli draw per Dmain call (per accumulation round), from the term's
  own generator (seeded by `seed`, identical on every rank, saved for exact
  resume), so all processes fire together. Stat `Loss/KD/<name>_fired` (0/1 per
  call; its mean is the firing rate). Because D's gen pass and real pass have
  a backward each, the reals are augmented once up front and t(x) computed
  before the gen pass; t(G(z)) is computed in the gen pass and kept for the
  real pass. Stats: Loss/D/<name>_kd_fake, _agg_fake, _kd_real, _agg_real.

CGKD (`CGKD(loss, weight=10, dist='sse', diversity=0)`):
    C_t = rownorm(t(X) T^T),  C_s = rownorm(s(X) T^T)   (B x K, rows L2-normalised)
    L_CGKD = weight * (d(C_t(x), C_s(x)) + d(C_t(G(z)), C_s(G(z))))
  Optional generator-side diversity term (off by default, `diversity` > 0):
    L_div = diversity * sum_{i != j} cos(C_t[i], C_t[j])   over the generated batch
  added to G's main loss, computed through the frozen teacher on the augmented
  fakes D sees, so its gradient reaches G (never the teacher's weights).
  Stats: Loss/D/<name>_real, _fake; Loss/G/<name>_diversity.

Distances (`dist`, terms.distance): 'l2' per-sample Euclidean norm,
averaged over the batch (the official AGKD); 'l1' per-sample sum of absolute
differences (the paper's text), averaged; 'mse' per-sample mean squared
difference, averaged; 'sse' the squared difference summed over the batch and
all dimensions (the official CGKD). None takes the term's official default
(AGKD 'l2', CGKD 'sse'); `--kd-dist` sets both terms.

The embeddings are used as the teacher returns them (CLIPTeacher: not
L2-normalised); t and s must have the same width (the student head is built
with `student_dim` = the teacher's `embed_dim`: `teacher_embed_dim`).
"""

import torch

import dnnlib
from torch_utils import training_stats

from kdgan_plugins.losses.terms import DISTANCES, LossTerm, distance

__all__ = ['AGKD', 'CGKD', 'rownorm', 'correlation', 'pairwise_cosine_sum', 'teacher_embed_dim',
           'check_teacher_assets']

TEACHER_CLASS = 'kdgan_plugins.teachers.clip_teacher.CLIPTeacher'


def rownorm(x, eps=1e-12):
    """Each row L2-normalised."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def correlation(emb, text):
    """rownorm(emb @ text^T): [N, d] x [K, d] -> [N, K]."""
    return rownorm(emb.float() @ text.to(device=emb.device, dtype=torch.float32).t())


def pairwise_cosine_sum(rows):
    """sum over ordered pairs i != j of cos(rows[i], rows[j])."""
    unit = rownorm(rows)
    gram = unit @ unit.t()
    return gram.sum() - gram.diagonal().sum()


def _check_dist(dist, term):
    if dist not in DISTANCES:
        raise ValueError(f'{term}: dist must be one of {", ".join(DISTANCES)}, got {dist!r}')
    return dist


class _KDTerm(LossTerm):
    needs_teacher = True

    def __init__(self, loss, name):
        super().__init__(loss, name)
        self.teacher = loss.get_teacher()   # Shared by the terms of one loss; built once, never pickled.
        student_dim = getattr(loss.D_module, 'student_dim', None)
        if student_dim is None:
            raise TypeError(f'loss term {name!r} needs a discriminator with a student head: wrap D in '
                            f'kdgan_plugins.networks.student.KDDiscriminator (the kdgan.* loss presets do)')
        if int(student_dim) != int(self.teacher.embed_dim):
            raise ValueError(f'loss term {name!r}: the student head gives {student_dim}-d embeddings but the teacher '
                             f'{getattr(self.teacher, "spec", "")} gives {self.teacher.embed_dim}-d ones; set '
                             f'D_kwargs.student_dim={self.teacher.embed_dim}')

    def D_outputs(self, side):
        return ('features',)

    def teacher_embed(self, img):
        """t(img) with no gradient anywhere (D phase)."""
        with torch.no_grad():
            return self.teacher.encode_image(img.detach()).float()

    @staticmethod
    def student(res):
        feat = res.get('feat')
        if feat is None:
            raise RuntimeError('the D pass returned no student embedding (D(img, c, features=True))')
        return feat.float()

    @classmethod
    def check_assets(cls, kwargs, **opts):
        return []   # The teacher is checked once per loss: check_teacher_assets.


class AGKD(_KDTerm):
    """Aggregated generative KD; see the module docstring."""

    needs_real_first = True

    def __init__(self, loss, weight=10.0, p=0.7, dist=None, seed=0, name='agkd'):
        super().__init__(loss, name)
        self.weight = float(weight)
        self.p = float(p)
        if not 0 <= self.p <= 1:
            raise ValueError(f'{name}: p must be in [0, 1], got {p}')
        self.dist = _check_dist('l2' if dist is None else dist, name)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))

    def draw(self):
        """One Bernoulli(p) draw: does the aggregated term fire this step?"""
        return bool(torch.rand([], generator=self.generator) < self.p)

    def state_dict(self):
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state):
        state = dict(state)
        gen_state = state.pop('generator', None)
        if gen_state is not None:
            self.generator.set_state(torch.as_tensor(gen_state, dtype=torch.uint8).cpu())
        super().load_state_dict(state)

    def begin_D(self, step):
        fired = self.draw()
        step[self.name] = dnnlib.EasyDict(fired=fired, t_real=self.teacher_embed(step.real_aug), t_fake=None)
        training_stats.report(f'Loss/KD/{self.name}_fired', float(fired))

    def _d(self, a, b):
        n = min(a.shape[0], b.shape[0])   # Cross terms pair real i with fake i.
        return distance(a[:n], b[:n], self.dist) * self.weight

    def D_terms(self, side, res, c, step):
        mine = step.get(self.name)
        if mine is None:
            raise RuntimeError(f'{self.name}: begin_D did not run before the {side} pass')
        s = self.student(res)
        kd_name, agg_name = f'{self.name}_kd_{side.replace("gen", "fake")}', f'{self.name}_agg_{side.replace("gen", "fake")}'
        if side == 'gen':
            mine.t_fake = self.teacher_embed(res.img_aug)
            out = {kd_name: self._d(mine.t_fake, s)}        # d(t(G(z)), s(G(z)))
            other = mine.t_real                              # d(t(x), s(G(z)))
        else:
            out = {kd_name: self._d(mine.t_real, s)}        # d(t(x), s(x))
            other = mine.t_fake                              # d(t(G(z)), s(x))
        if mine.fired and other is not None:
            out[agg_name] = self._d(other, s)
        else:
            training_stats.report('Loss/D/' + agg_name, [])  # Same stat names on every rank, every step.
        return out


class CGKD(_KDTerm):
    """Correlated generative KD (+ optional G-side diversity); see the module docstring."""

    def __init__(self, loss, weight=10.0, dist=None, diversity=0.0, name='cgkd'):
        super().__init__(loss, name)
        self.weight = float(weight)
        self.dist = _check_dist('sse' if dist is None else dist, name)
        self.diversity = float(diversity)
        self.text = self.teacher.text_embeddings.detach()   # [K, d], once.

    def D_terms(self, side, res, c, step):
        s = self.student(res)
        C_t = correlation(self.teacher_embed(res.img_aug), self.text)
        C_s = correlation(s, self.text)
        return {f'{self.name}_{"fake" if side == "gen" else "real"}': distance(C_t, C_s, self.dist) * self.weight}

    def G_terms(self, res, c):
        if self.diversity == 0:
            return {}
        C_t = correlation(self.teacher.encode_image(res.img_aug), self.text)   # Gradient flows to the image.
        return {f'{self.name}_diversity': pairwise_cosine_sum(C_t) * self.diversity}


# Before training: the teacher's files and width.


def _teacher_spec(teacher_kwargs):
    kwargs = dict(teacher_kwargs or {})
    model = kwargs.get('spec') or kwargs.get('model') or 'ViT-B-32'
    pretrained = kwargs.get('pretrained', 'openai')
    if ':' not in str(model) and 'spec' not in kwargs and pretrained:
        model = f'{model}:{pretrained}'
    return model, kwargs


def check_teacher_assets(teacher_kwargs, detector_dir=None, quick=True):
    """Resolve the teacher's weight file without building it (clip_teacher.check_teacher_available);
    returns a line for the log. Raises the teacher module's one-line errors."""
    from kdgan_plugins.teachers import clip_teacher
    spec, kwargs = _teacher_spec(teacher_kwargs)
    path = clip_teacher.check_teacher_available(spec, weights=kwargs.get('weights'), config=kwargs.get('config'),
                                                teacher_dir=kwargs.get('teacher_dir'),
                                                detector_dir=kwargs.get('detector_dir') or detector_dir,
                                                quick=quick)
    if kwargs.get('config'):     # a custom architecture: the spec's model name is not what gets built
        return f'teacher {kwargs["config"]}: {path}'
    return f'teacher {spec}: {path}'


def teacher_embed_dim(teacher_kwargs=None):
    """The teacher's embedding width from its open_clip config, without building it
    (what train.py puts in D_kwargs.student_dim)."""
    from kdgan_plugins.teachers import clip_teacher
    spec, kwargs = _teacher_spec(teacher_kwargs)
    if kwargs.get('config'):
        model_cfg, _pre = clip_teacher.read_model_config(kwargs['config'])
        return int(model_cfg['embed_dim'])
    model, _tag = clip_teacher.parse_teacher_spec(spec)
    cfg = clip_teacher._builtin_config(model.replace('/', '-'))
    if cfg is None:
        raise clip_teacher.TeacherSpecError(f'unknown open_clip architecture {model!r}')
    return int(cfg['embed_dim'])

