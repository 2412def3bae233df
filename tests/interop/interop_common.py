# SPDX-License-Identifier: MIT
"""What every interop script checks before it starts."""
import os
import shutil


def setup(uqcow, label):
    """(absolute path of the uqcow binary, None) when the run can go on;
    else (None, exit status): 77 (meson's skip) without qemu-img/qemu-io,
    1 without a uqcow binary. Fixes MALLOC_PERTURB_ (meson picks a random
    value) so reads of uninitialised memory show the same way every run."""
    if not shutil.which('qemu-img') or not shutil.which('qemu-io'):
        print('%s: SKIP: qemu-img/qemu-io not found (Debian: qemu-utils)' % label)
        return None, 77
    if not uqcow or not os.access(uqcow, os.X_OK):
        print('%s: no uqcow binary (--uqcow or UQCOW): %r' % (label, uqcow))
        return None, 1
    os.environ.setdefault('MALLOC_PERTURB_', '165')
    return os.path.abspath(uqcow), None
