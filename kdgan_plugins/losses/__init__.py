"""Losses: one adversarial/regulariser core (training.loss.StyleGAN2Loss) plus
composable terms.

- `terms`: the term protocol, hinge terms, distances, AE reconstruction.
- `fastgan_loss.FastGANLoss`: the core with FastGAN's defaults (hinge with a
  random margin, G's auxiliary 128 image, reconstruction).
- `kd`: KD-DLGAN's AGKD and CGKD terms (and the optional G-side diversity).

`check_assets(loss_kwargs, detector_dir=None, quick=True)` resolves, before
training, every file the configured loss will need (the LPIPS detector of
`recon=lpips`, the KD teacher's weights), raising the resolver's one-line
error when one is missing; it returns lines for the log.
"""

__all__ = ['check_assets']


def _needs_teacher(class_name):
    import dnnlib
    cls = dnnlib.util.get_obj_by_name(class_name)
    return bool(getattr(cls, 'needs_teacher', False)), cls


def check_assets(loss_kwargs, detector_dir=None, quick=True):
    """Fail before training when a file the loss needs cannot be had; see the module docstring."""
    from kdgan_plugins.losses import terms as terms_lib
    from kdgan_plugins.losses import kd
    loss_kwargs = dict(loss_kwargs or {})
    terms = loss_kwargs.get('terms')
    if terms is None and str(loss_kwargs.get('class_name', '')).endswith('FastGANLoss'):
        from kdgan_plugins.losses.fastgan_loss import default_terms
        terms = default_terms()
    lines = []
    teacher_needed = False
    for _name, spec in terms_lib.term_specs(terms):
        needs, cls = _needs_teacher(spec['class_name'])
        teacher_needed = teacher_needed or needs
        kwargs = {k: v for k, v in spec.items() if k != 'class_name'}
        lines.extend(cls.check_assets(kwargs, detector_dir=detector_dir, quick=quick))
    if teacher_needed:
        lines.append(kd.check_teacher_assets(loss_kwargs.get('teacher'), detector_dir=detector_dir, quick=quick))
    return lines
