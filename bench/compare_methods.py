"""The methods `bench/compare.py` knows by name, and its budget presets: data, not code.

A method is a name and the `stylegan2_ada/train.py` flags that select it; every
run of a comparison gets the same data, budget and `--extra` flags, so two
methods differ only in what is listed here. Names follow `<backbone>+<aug>[+kdgan]`.

The KD-DLGAN rows name the loss only: the teacher (`--teacher-weights` and
friends, see train.py --help) is a property of the experiment, not of the
method, so it goes in `--extra` or in a budget preset.

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
#   snap, tick, metric, detector_dir, detector, extra (list of train.py flags), device.
# The Fashion-MNIST reproduction (issue 7) will add 'cpu' and 'gpu' here; until
# then the table is empty and --budget names none.
BUDGETS = {}
