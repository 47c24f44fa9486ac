"""`python -m kdgan_plugins.upstream --outdir=... --data=... --cfg=fastgan ...`, run from a
StyleGAN2-ADA checkout: the hook around that checkout's train.py, with no patch applied."""

import os
import sys

if __name__ == '__main__':
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import train  # The checkout's own train.py, as a module.

    from kdgan_plugins.upstream import hook
    hook.main(train)
