"""The methods `bench/compare.py` knows by name, and its budget presets: data, not code.

A method is a name and the `stylegan2_ada/train.py` flags that select it; every
run of a comparison gets the same data, budget and `--extra` flags, so two
methods differ only in what is listed here. Names follow `<backbone>+<aug>[+kdgan]`.

The KD-DLGAN rows name the loss only: the teacher (`--teacher-weights` and
friends, see train.py --help) is a property of the experiment, not of the
method, so it goes in `--extra-for='--loss=kdgan.KDDLGAN:...'` or in a budget preset.

Flags that the runner owns (--outdir, --seed, --kimg, --tick, --snap, --resume,
--metrics, --dry-run) may not appear here or in `--extra`; see
`compare.RESERVED_FLAGS`.
"""

METHODS = {
    'stylegan2+ada':           ['--cfg=auto', '--aug=ada'],
    'stylegan2+noaug':         ['--cfg=auto', '--aug=noaug'],
    'stylegan2+diffaug':       ['--cfg=auto', '--aug=diffaug'],
    'stylegan2+diffaug+kdgan': ['--cfg=auto', '--aug=diffaug', '--loss=kdgan.KDDLGAN'],
    'fastgan+diffaug':         ['--cfg=fastgan', '--aug=diffaug'],
    'fastgan+kdgan':           ['--cfg=fastgan', '--aug=diffaug', '--loss=kdgan.KDDLGAN'],
}

# The grid of issue 7: the methods a reproduction compares unless told otherwise.
DEFAULT_GRID = ['stylegan2+ada', 'stylegan2+diffaug', 'fastgan+diffaug', 'fastgan+kdgan', 'stylegan2+diffaug+kdgan']

# Budget presets for `compare.py --budget=NAME`: each is a dict of compare.py
# option values used where the command line gives none. Accepted keys:
#   data, eval_data, methods (list of names), seeds (list of ints), kimg, minutes,
#   snap, tick, metric, detector_dir, detector, extra (list of train.py flags),
#   extra_for ({selector flag: [train.py flags]}: added to the methods that carry
#   the selector), device, skip_start, and prepare: ('module:function', kwargs), called as
#   function(outdir, **kwargs) first; it returns the values of the `{name}`
#   placeholders used in the other entries.
#
# 'cpu' and 'gpu' are the Fashion-MNIST few-shot reproduction (issue 7;
# bench/fmnist/prepare.py): 100 class-balanced training images at 64x64 (the
# smallest resolution FastGAN builds), FID and KID of 5k generated images against
# the 10k test images in the feature space of a CNN classifier trained on the 60k
# training split, the KD-DLGAN teacher a small CLIP trained on the same split with
# open_clip. Networks are scaled down to fit the budget; FastGAN's reconstruction
# term is MSE because LPIPS needs NVIDIA's VGG16 file, which these machines lack.
# ADA's p may move from 0 to 1 in a few kimg (upstream's 500 would keep it at 0
# for the whole budget).

_FMNIST = dict(
    prepare=('bench.fmnist.prepare:prepare', {}),
    data='{fmnist_train}', eval_data='{fmnist_test}', detector='{evaluator}', metric='fidkid5k_full',
    methods=list(DEFAULT_GRID), seeds=[0, 1, 2],
)
_TEACHER = ['--teacher-weights={teacher_weights}', '--teacher-config={teacher_config}']

BUDGETS = {
    # 93 minutes on 2 CPU cores with the evaluator and teacher cached (2026-11-21; README "Results so far").
    'cpu': dict(_FMNIST, kimg=2, tick=0.25, snap=4, skip_start=True, device='cpu',
                extra=['--mirror=1', '--batch=16', '--workers=0'],
                extra_for={'--cfg=auto': ['--cbase=2048', '--cmax=64', '--map-depth=2'],
                           '--cfg=fastgan': ['--ngf=16', '--ndf=16', '--recon=mse'],
                           '--aug=ada': ['--ada-kimg=5'],
                           '--loss=kdgan.KDDLGAN': _TEACHER}),
    # Meant for 20 minutes on one H100/H200 (not yet measured: no device was lent so far).
    'gpu': dict(_FMNIST, kimg=20, tick=1, snap=5, skip_start=True, device='cuda',
                extra=['--mirror=1', '--batch=32'],
                extra_for={'--cfg=auto': ['--cbase=8192', '--cmax=256', '--map-depth=2'],
                           '--cfg=fastgan': ['--ngf=32', '--ndf=32', '--recon=mse'],
                           '--aug=ada': ['--ada-kimg=20'],
                           '--loss=kdgan.KDDLGAN': _TEACHER}),
}
