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
    # KD-DLGAN's ablation (its supplement's Table 4): each term alone on the same backbone.
    'fastgan+agkd':            ['--cfg=fastgan', '--aug=diffaug', '--loss=kdgan.AGKD'],
    'fastgan+cgkd':            ['--cfg=fastgan', '--aug=diffaug', '--loss=kdgan.CGKD'],
}

# Each KD row and the row it adds to: the report tests whether their difference exceeds seed noise.
KD_BASELINES = {
    'fastgan+kdgan':           'fastgan+diffaug',
    'fastgan+agkd':            'fastgan+diffaug',
    'fastgan+cgkd':            'fastgan+diffaug',
    'stylegan2+diffaug+kdgan': 'stylegan2+diffaug',
}

# The grid of issue 7: the methods a reproduction compares unless told otherwise.
DEFAULT_GRID = ['stylegan2+ada', 'stylegan2+diffaug', 'fastgan+diffaug', 'fastgan+kdgan', 'stylegan2+diffaug+kdgan']

# Budget presets for `compare.py --budget=NAME`: each is a dict of compare.py
# option values used where the command line gives none. Accepted keys:
#   data, eval_data, methods (list of names), seeds (list of ints), kimg, minutes,
#   snap, tick, metric, detector_dir, detector, extra (list of train.py flags),
#   extra_for ({selector flag: [train.py flags]}: added to the methods that carry
#   the selector), device, skip_start, jobs, reuse (list of other outdirs whose
#   matching finished runs are taken, not retrained; '{outdir}' is this one), and prepare: ('module:function', kwargs), called as
#   function(outdir, **kwargs) first; it returns the values of the `{name}`
#   placeholders used in the other entries.
#
# 'cpu' and 'gpu' are the Fashion-MNIST few-shot reproduction (issues 7 and 14;
# bench/fmnist/prepare.py): 100 class-balanced training images at 32x32, one
# channel (Fashion-MNIST's own size), FID and KID of 5k generated images against
# the 10k test images in the feature space of a CNN classifier trained on the 60k
# training split, the KD-DLGAN teacher a small CLIP trained on the same split with
# open_clip. Networks are scaled down to fit the budget; FastGAN's reconstruction
# term is MSE because LPIPS needs NVIDIA's VGG16 file, which these machines lack.
# ADA's p may move from 0 to 1 in a few kimg (upstream's 500 would keep it at 0
# for the whole budget).
#
# 'cpu' (measured 2026-12-07, docs/results/fmnist-cpu/pilots.md): two runs at a time,
# one core each; a run stops at 30 kimg or at the first snapshot past 13 minutes of
# training, whichever comes first, so 15 runs end within about 2 hours. FastGAN at
# ngf = ndf = 8 and lr 5e-4: per CPU second it lowered the FID fastest of the
# pilots (ngf 8 at lr 2e-4 / 5e-4: 480 / 409 at 8 kimg; ngf 16 at 2e-4: 469).
# 'cpu-ablation' is KD-DLGAN's supplement Table 4 on the same settings: FastGAN
# with DiffAugment, + AGKD, + CGKD, + both. Its first and last rows are the main
# grid's FastGAN rows on the same settings: where `make reproduce-fmnist` has already
# trained them (runs/fmnist-cpu beside this outdir), they are taken, not retrained.

_FMNIST = dict(
    prepare=('bench.fmnist.prepare:prepare', {}),
    data='{fmnist_train}', eval_data='{fmnist_test}', detector='{evaluator}', metric='fidkid5k_full',
    methods=list(DEFAULT_GRID), seeds=[0, 1, 2],
)
_TEACHER = ['--teacher-weights={teacher_weights}', '--teacher-config={teacher_config}']
_KD_TEACHER = {loss: _TEACHER for loss in ('--loss=kdgan.KDDLGAN', '--loss=kdgan.AGKD', '--loss=kdgan.CGKD')}
_CPU = dict(_FMNIST, kimg=30, minutes=13, tick=1, snap=6, jobs=2, skip_start=True, device='cpu',
            extra=['--mirror=1', '--batch=16', '--workers=0'],
            extra_for=dict(_KD_TEACHER, **{
                '--cfg=auto': ['--cbase=2048', '--cmax=64', '--map-depth=2'],
                '--cfg=fastgan': ['--ngf=8', '--ndf=8', '--recon=mse', '--lr=0.0005'],
                '--aug=ada': ['--ada-kimg=5']}))

BUDGETS = {
    'cpu': _CPU,
    'cpu-ablation': dict(_CPU, methods=['fastgan+diffaug', 'fastgan+agkd', 'fastgan+cgkd', 'fastgan+kdgan'],
                         reuse=['{outdir}/../fmnist-cpu']),
    # Meant for 20 minutes on one H100/H200 (not yet measured: no device was lent so far).
    'gpu': dict(_FMNIST, kimg=20, tick=1, snap=5, skip_start=True, device='cuda',
                extra=['--mirror=1', '--batch=32'],
                extra_for=dict(_KD_TEACHER, **{
                    '--cfg=auto': ['--cbase=8192', '--cmax=256', '--map-depth=2'],
                    '--cfg=fastgan': ['--ngf=32', '--ndf=32', '--recon=mse'],
                    '--aug=ada': ['--ada-kimg=20']})),
}
