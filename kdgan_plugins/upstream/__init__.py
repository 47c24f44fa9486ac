"""The kdgan plug-ins inside a StyleGAN2-ADA tree that is not ours (an NVlabs checkout).

`main(host)` runs that tree's train.py through the hook (hook.py): our
--cfg/--loss/--aug names and plug-in options, resolved as our train.py
resolves them, patched into what the host's own setup built, then the host's
own launcher and loop. patches/stylegan2-ada-pytorch.patch makes train.py
call it; `python -m kdgan_plugins.upstream ...` from the checkout does the
same without patching. See patches/README.md.
"""

__all__ = ['main']


def main(host='__main__', args=None):
    from kdgan_plugins.upstream import hook
    return hook.main(host, args=args)
