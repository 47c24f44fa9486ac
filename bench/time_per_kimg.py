"""Seconds per kimg (1000 training images) of a few backbones and sizes, for the README's
"Your own images" table: how long a run of N kimg takes before starting it.

Each case is built by train.py's own option resolution and bench_iteration's `Setup`
(the networks, loss, augmentation and optimisers the loop builds), then a few training
iterations are timed and extrapolated to one kimg: sec/kimg = sec/iteration x 1000 / batch.
Lazy regularisation phases run on every timed iteration and count 1/interval of their time.
Not timed: data loading, tick maintenance (grids, snapshots, metrics), ADA's p update.

Two clocks per iteration: the process CPU time (`time.process_time`) with torch at one
thread, which a shared machine's load barely moves, and the wall time, which it does; the
load average is printed beside them.

    python bench/time_per_kimg.py                                  # the README's cases
    python bench/time_per_kimg.py --case=fastgan-ngf8 --res=32 --iters=2 --json=t.jsonl
"""

import json
import os
import sys

import click

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_iteration  # noqa: E402  (puts the harness on sys.path; Setup, machine_info)

import torch  # noqa: E402

# name -> (train.py flags, what the README calls it). Batch: the cfg's default unless --batch.
CASES = {
    'fastgan-ngf8': (dict(cfg='fastgan', aug='diffaug', recon='mse', ngf=8, ndf=8), 'FastGAN, --ngf=8 --ndf=8'),
    'fastgan-ngf64': (dict(cfg='fastgan', aug='diffaug', recon='mse'), 'FastGAN, default widths (64)'),
    'stylegan2-auto': (dict(cfg='auto', aug='ada'), 'StyleGAN2, --cfg=auto'),
    'stylegan2-small': (dict(cfg='auto', aug='ada', cbase=4096, cmax=128), 'StyleGAN2, --cfg=auto --cbase=4096 '
                                                                          '--cmax=128'),
}
DEFAULT_CASES = ('fastgan-ngf8', 'fastgan-ngf64', 'stylegan2-small')


def measure_case(name, res, batch, warmup, iters):
    flags, label = CASES[name]
    setup = bench_iteration.Setup(name, flags, f'builtin:shapes-{res}', batch, torch.device('cpu'),
                                  aug_p=0.2 if flags.get('aug') == 'ada' else None)
    setup.build(seed=0)
    for _ in range(warmup):
        setup.iteration(record=False)
    for _ in range(iters):
        setup.iteration()
    timed = setup.summary()   # per iteration, lazy-regularisation phases amortised over their interval
    per_img = 1000 / setup.args.batch_size
    wall, cpu = timed['sec_per_iter'], timed['cpu_sec_per_iter']
    row = dict(case=name, label=label, res=res, batch=setup.args.batch_size, params=setup.params,
               warmup=warmup, iters=iters, cpu_sec_per_iter=cpu, wall_sec_per_iter=wall,
               cpu_sec_per_kimg=cpu * per_img, wall_sec_per_kimg=wall * per_img,
               load_avg=[round(x, 2) for x in os.getloadavg()])
    setup.free()
    return row


@click.command()
@click.option('--case', 'cases', multiple=True, type=click.Choice(sorted(CASES)),
              help='Backbone case(s) [default: ' + ', '.join(DEFAULT_CASES) + ']')
@click.option('--res', 'resolutions', multiple=True, type=int, help='Resolution(s) [default: 32 and 64]')
@click.option('--batch', type=click.IntRange(min=1), help="Batch size [default: the cfg's]")
@click.option('--warmup', type=click.IntRange(min=0), default=1, show_default=True, help='Untimed iterations')
@click.option('--iters', type=click.IntRange(min=1), default=2, show_default=True, help='Timed iterations')
@click.option('--threads', type=click.IntRange(min=1), default=1, show_default=True, help='torch CPU threads')
@click.option('--json', 'json_path', metavar='PATH', help='Append one JSON line per case to this file')
def main(cases, resolutions, batch, warmup, iters, threads, json_path):
    """CPU seconds per kimg (one thread) and wall seconds per kimg (under the current load)."""
    torch.set_num_threads(threads)
    info = bench_iteration.machine_info(torch.device('cpu'))
    print(f'{info["date"]}  {info["cpu"]}, {info["cores"]} cores, torch {info["torch"]} at {threads} thread(s); '
          f'load average {info["load_avg_1_5_15"]}; {warmup} warm-up + {iters} timed iterations per case')
    print('| backbone | res | batch | CPU s/kimg | wall s/kimg | load (1 min) |')
    print('|---|---|---|---|---|---|')
    for name in cases or DEFAULT_CASES:
        for res in resolutions or (32, 64):
            row = measure_case(name, res, batch, warmup, iters)
            print(f'| {row["label"]} | {res} | {row["batch"]} | {row["cpu_sec_per_kimg"]:.0f} | '
                  f'{row["wall_sec_per_kimg"]:.0f} | {row["load_avg"][0]} |', flush=True)
            if json_path:
                with open(json_path, 'a', encoding='utf-8') as f:
                    f.write(json.dumps(dict(row, machine=info)) + '\n')


if __name__ == '__main__':
    main()
