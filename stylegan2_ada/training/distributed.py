"""Runs launched by torchrun (or any launcher that sets the env:// variables).

`torchrun --nproc-per-node=N [--nnodes=M --node-rank=K --master-addr=HOST
--master-port=PORT] train.py ...` starts one train.py per process with RANK,
LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set.
Each process checks the options itself (they are the same everywhere, so
every rank fails the same way, before any group exists); then the processes
join one group through env://, global rank 0 alone makes the run folder and
sends its path to the others, and each runs the training loop as its global
rank. Nothing but rank 0 writes to the run folder, so other nodes need not
share its file system (a resume needs the resume file on every node).
"""

import os

import dnnlib

ENV_KEYS = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


class LaunchError(RuntimeError):
    """The environment of an env:// launch is incomplete or inconsistent."""


def torchrun_env(environ=None):
    """EasyDict(rank, local_rank, world_size, local_world_size) when this process was started by an
    env:// launcher, None when none of its variables is set."""
    environ = os.environ if environ is None else environ
    present = [key for key in ENV_KEYS if key in environ]
    if not present:
        return None
    missing = [key for key in ENV_KEYS if key not in environ]
    if missing:
        raise LaunchError(f'{", ".join(present)} set but {", ".join(missing)} not: start train.py with torchrun '
                          '(which sets them all) or unset them')
    try:
        numbers = {key: int(environ[key]) for key in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')}
        local_world = int(environ.get('LOCAL_WORLD_SIZE', numbers['WORLD_SIZE']))
    except ValueError as err:
        raise LaunchError(f'RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE must be integers ({err})') from err
    env = dnnlib.EasyDict(rank=numbers['RANK'], local_rank=numbers['LOCAL_RANK'], world_size=numbers['WORLD_SIZE'],
                          local_world_size=local_world)
    if not (env.world_size >= 1 and 0 <= env.rank < env.world_size and 0 <= env.local_rank < env.local_world_size):
        raise LaunchError(f'inconsistent launch: RANK={env.rank}, LOCAL_RANK={env.local_rank}, '
                          f'WORLD_SIZE={env.world_size}, LOCAL_WORLD_SIZE={env.local_world_size}')
    return env


def join_group(env, device_type):
    """Join the process group through env:// (gloo on the CPU, NCCL on CUDA); returns this process's device."""
    import torch
    device = torch.device('cuda', env.local_rank) if device_type == 'cuda' else torch.device('cpu')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if env.world_size > 1:
        torch.distributed.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo',
                                             init_method='env://', rank=env.rank, world_size=env.world_size)
    return device


def from_lead(make, env, device):
    """`make()` on global rank 0, its (picklable) result on every rank. When rank 0 fails, the others
    raise LaunchError instead of waiting for it forever."""
    import torch
    if env.world_size == 1:
        return make()
    box = [None]
    failure = None
    if env.rank == 0:
        try:
            box = [('ok', make())]
        except BaseException as err:   # tell the other ranks before re-raising
            failure = err
            box = [('error', f'{type(err).__name__}: {err}')]
    torch.distributed.broadcast_object_list(box, src=0, device=device if device.type == 'cuda' else None)
    if failure is not None:
        raise failure
    status, value = box[0]
    if status != 'ok':
        raise LaunchError(f'rank 0 could not set up the run: {value}')
    return value


def leave_group():
    import torch
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
