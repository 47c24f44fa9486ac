"""train.py under torchrun (issue 12, item 6): env:// rendezvous, ranks from the environment, one
run folder made by global rank 0. Tested as 2 nodes x 1 process on localhost (two torchrun
agents, --nnodes=2 --node-rank=0/1, gloo), against train.py --gpus=2 on the CPU: the same weights."""
import os
import socket
import subprocess
import sys

import pytest
import torch

from helpers import HARNESS, invoke_train

ROOT = os.path.dirname(HARNESS)
# A tiny run: two minibatches of 4 after the first tick, one snapshot at the end.
TRAIN_ARGS = ['--data=builtin:shapes-16', '--device=cpu', '--metrics=none', '--cbase=256', '--cmax=16',
              '--map-depth=1', '--kimg=0.008', '--tick=0.004', '--snap=10', '--batch=4', '--workers=0', '--grid=1',
              '--aug=noaug', '--seed=3']


def _env():
    env = {key: value for key, value in os.environ.items()
           if key not in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}
    return dict(env, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run_folder(outdir):
    folders = os.listdir(outdir)
    assert len(folders) == 1, folders
    return os.path.join(outdir, folders[0])


def _final(run_dir):
    from training import checkpoint   # Its newest snapshot (names no longer collide within a kimg).
    return torch.load(checkpoint.list_snapshots(run_dir, checkpoint.CKPT_SUFFIX)[-1], map_location='cpu',
                      weights_only=True)


@pytest.mark.slow
def test_two_nodes_under_torchrun_match_gpus_2(tmp_path):
    spawned, torchrun = tmp_path / 'spawned', tmp_path / 'torchrun'
    port = _free_port()
    commands = [[sys.executable, 'train.py', f'--outdir={spawned}', '--gpus=2', *TRAIN_ARGS]]
    for node in (0, 1):
        commands.append([sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', f'--node-rank={node}',
                         '--nproc-per-node=1', '--master-addr=127.0.0.1', f'--master-port={port}',
                         'train.py', f'--outdir={torchrun}', *TRAIN_ARGS])
    # All three at once: the reference run (train.py spawning 2 ranks) and the two torchrun "nodes".
    procs = [subprocess.Popen(command, cwd=HARNESS, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for command in commands]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=400)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-4000:]
    outputs = outputs[1:]

    # One run folder, made and written by global rank 0 only; rank 1 trains but reports nothing.
    run_dir = _run_folder(torchrun)
    assert 'Launching under torchrun: 2 processes' in outputs[0] and 'tick 1' in outputs[0], outputs[0][-3000:]
    assert 'tick ' not in outputs[1] and 'Output directory' not in outputs[1]
    with open(os.path.join(run_dir, 'log.txt'), encoding='utf-8') as f:
        assert 'tick 1' in f.read()

    a, b = _final(_run_folder(spawned)), _final(run_dir)
    assert a['progress']['cur_nimg'] == b['progress']['cur_nimg'] == 8
    assert len(b['ranks']) == 2
    for key in ('G', 'D', 'G_ema'):
        assert sorted(a[key]) == sorted(b[key])
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f'{key}.{name}'


@pytest.mark.parametrize('env, message', [
    (dict(RANK='0', WORLD_SIZE='2'), 'LOCAL_RANK, MASTER_ADDR, MASTER_PORT not'),
    (dict(RANK='2', LOCAL_RANK='0', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT='1'), 'inconsistent'),
    (dict(RANK='x', LOCAL_RANK='0', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT='1'), 'integers'),
])
def test_a_broken_launch_environment_is_a_usage_error(tmp_path, monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = invoke_train('--outdir', tmp_path / 'runs', *TRAIN_ARGS)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / 'runs').exists()


def test_gpus_must_agree_with_the_world_size(tmp_path, monkeypatch):
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT='1').items():
        monkeypatch.setenv(key, value)
    result = invoke_train('--outdir', tmp_path / 'runs', '--gpus=3', *TRAIN_ARGS)
    assert result.exit_code == 2 and 'WORLD_SIZE=2' in result.output, result.output
    assert not (tmp_path / 'runs').exists()
