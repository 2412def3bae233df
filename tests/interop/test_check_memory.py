#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""uqcow check states the memory it needs, and the need is bounded.

A sparse 16 TiB image (qemu-img create, 64 KiB clusters) is checked with
--memory in both output formats; then the same image with its file
truncated to 1 TiB (a file of 16 Mi clusters, as an image with that much
data has): the need per cluster of the file must be 3 bytes (16-bit count
and kind), which puts a 16 TiB file under 1 GiB, and the check's max RSS
(getrusage of the child) must stay within the stated need plus the
process's own base. Without --memory the output stays qemu-img's.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


def fail(msg):
    print('FAIL: ' + msg)
    sys.exit(1)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        fail('%s: exit %d\n%s%s' % (' '.join(cmd), p.returncode, p.stdout, p.stderr))
    return p.stdout


def need(uq, img):
    out = json.loads(run([uq, 'check', '--memory', '--output=json', img]))
    if 'check-memory-need' not in out:
        fail('no check-memory-need in %r' % out)
    return out['check-memory-need']


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--uqcow', required=True)
    args = ap.parse_args()
    if not shutil.which('qemu-img'):
        print('SKIP: qemu-img not installed')
        return 77
    d = tempfile.mkdtemp(prefix='uqcow-checkmem.')
    img = os.path.join(d, 'x.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k', img, '16T'])

    plain = json.loads(run([args.uqcow, 'check', '--output=json', img]))
    if 'check-memory-need' in plain:
        fail('check-memory-need without --memory: qemu-img has no such key')
    human = run([args.uqcow, 'check', '--memory', img])
    if 'Check memory need: ' not in human:
        fail('no memory line in %r' % human)
    sparse = need(args.uqcow, img)
    size = os.path.getsize(img)
    # the 16 TiB image's L1 (256 KiB) and read-ahead: small
    if sparse > 32 * MiB:
        fail('sparse 16 TiB image: need %d bytes' % sparse)

    os.truncate(img, 1 * TiB)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * KiB
    big = need(args.uqcow, img)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * KiB
    per = (big - sparse) / ((1 * TiB - size) / (64 * KiB))
    at16 = sparse + per * (16 * TiB / (64 * KiB))
    print('sparse 16 TiB image: %.1f MiB; file of 1 TiB: %.1f MiB (%.2f bytes a '
          'cluster), max RSS %.1f MiB; a 16 TiB file: %.0f MiB' % (
              sparse / MiB, big / MiB, per, rss / MiB, at16 / MiB))
    if abs(per - 3.0) > 0.01:
        fail('%.3f bytes per cluster of the file, not 3' % per)
    if at16 >= 1 * GiB:
        fail('a 16 TiB file would need %d bytes' % at16)
    # the RSS high-water mark of any child so far: the 1 TiB check's if
    # it rose (the base of a process and its caches: well under 64 MiB)
    if rss > before and rss > big + 64 * MiB:
        fail('max RSS %d bytes above the stated %d' % (rss, big))
    shutil.rmtree(d)
    print('ok')
    return 0


if __name__ == '__main__':
    sys.exit(main())
