#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Read-path interop: images made by qemu must read back identically in uqcow.

Usage: test_read.py --uqcow PATH [--quick] [--images DIR] [--only NAME ...] [-v] [-k]

Generates the images (gen_images.py) into a fresh temporary directory, then
for each one checks `uqcow convert -O raw` against `qemu-img convert -O raw`,
`uqcow map` against `qemu-img map` (data/zero classification of every byte),
`uqcow info` against `qemu-img info`, `uqcow compare` against the expected raw
and a one-byte-modified copy, and `uqcow io -r -c "read -P"` with right and
wrong patterns.  The directory is removed on success and kept on failure.
Exit 0 all passed, 1 any failure, 77 qemu-img/qemu-io missing.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_images  # noqa: E402
import interop_common  # noqa: E402

CHUNK = 1 << 20
INFO_KEYS = ['virtual-size', 'cluster-size', 'backing-filename',
             'format-specific.data.refcount-bits', 'format-specific.data.compat',
             'format-specific.data.extended-l2', 'format-specific.data.compression-type']
INFO_NOTE_KEYS = ['format', 'backing-filename-format', 'dirty-flag',
                  'format-specific.data.lazy-refcounts', 'format-specific.data.corrupt',
                  'format-specific.data.data-file', 'format-specific.data.data-file-raw']


class Result:
    def __init__(self, name):
        self.name, self.fails, self.notes = name, [], []

    def fail(self, msg):
        self.fails.append(msg)

    def note(self, msg):
        self.notes.append(msg)


WRAP = []      # --wrapper, e.g. valgrind
PSYNC = {'UQCOW_IO': 'psync'}


def uq(args, cwd, env=None, timeout=600):
    try:
        p = subprocess.run(WRAP + args, cwd=cwd, capture_output=True, timeout=timeout,
                           env=dict(os.environ, **(env or {})))
        return p.returncode, p.stdout, p.stderr.decode(errors='replace').strip()
    except subprocess.TimeoutExpired:
        return 'timeout', b'', 'timed out after %ds' % timeout


def show(args, d, env=None):
    env = dict(env or {}, **{k: v for k, v in os.environ.items() if k == 'MALLOC_PERTURB_'})
    return 'cd %s && %s%s' % (d, ''.join('%s=%s ' % kv for kv in env.items()),
                              ' '.join(a if a and ' ' not in a else repr(a) for a in WRAP + args))


def line1(err):
    return (err.splitlines() or [''])[0]


def first_diff(a, b):
    """Offset of the first differing byte of two files, or None."""
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        off = 0
        while True:
            x, y = fa.read(CHUNK), fb.read(CHUNK)
            if x != y:
                n = min(len(x), len(y))
                return off + next((i for i in range(n) if x[i] != y[i]), n)
            if not x:
                return None
            off += len(x)


def all_zero(path, off, n):
    with open(path, 'rb') as f:
        f.seek(off)
        while n > 0:
            b = f.read(min(n, CHUNK))
            if b.count(0) != len(b) or not b:
                return False
            n -= len(b)
    return True


def segments(extents, size):
    """Sorted (start, end, zero, data, extent) covering [0, size), or an error."""
    segs, pos = [], 0
    for e in sorted(extents, key=lambda e: e['start']):
        if e['start'] != pos:
            return None, 'extent list has a %s at %d' % (
                'gap' if e['start'] > pos else 'overlap', min(pos, e['start']))
        segs.append((pos, pos + e['length'], bool(e['zero']), bool(e['data']), e))
        pos += e['length']
    if pos != size:
        return None, 'extents end at %d, virtual size is %d' % (pos, size)
    return segs, None


def check_map(r, e, d, exe, raw):
    args = [exe, 'map', '--output=json', e['image']]
    rc, out, err = uq(args, d)
    if rc != 0:
        return r.fail('map: exit %s: %s' % (rc, line1(err)))
    try:
        umap = json.loads(out)
    except ValueError as x:
        return r.fail('map: bad JSON (%s): %r' % (x, out[:200]))
    qs, qerr = segments(e['qemu_map'], e['size'])
    us, uerr = segments(umap, e['size'])
    if qerr:
        return r.fail('qemu map: ' + qerr)
    if uerr:
        return r.fail('map: ' + uerr)
    bad, i, j, pos = [], 0, 0, 0
    while pos < e['size']:
        q, u = qs[i], us[j]
        end = min(q[1], u[1])
        if q[3] != u[3] or (not q[3] and q[2] != u[2]):
            bad.append((pos, end, q[2:4], u[2:4]))
        elif q[2] != u[2]:     # both data: qemu also probes the host file for holes
            if raw and not all_zero(raw, pos, end - pos):
                bad.append((pos, end, q[2:4], u[2:4]))
            else:
                r.note('map [%d,%d): zero %s (qemu) vs %s (uqcow), data both' %
                       (pos, end, q[2], u[2]))
        for k in ('present', 'depth'):
            if k in u[4] and q[4].get(k) != u[4][k]:
                r.note('map [%d,%d): %s %s (qemu) vs %s (uqcow)' %
                       (pos, end, k, q[4].get(k), u[4][k]))
        pos = end
        i += q[1] == end
        j += u[1] == end
    if bad:
        s, t, qf, uf = bad[0]
        r.fail('map: %d range(s) differ, first at offset %d..%d: qemu zero=%s data=%s, '
               'uqcow zero=%s data=%s  [%s]' % (len(bad), s, t, *qf, *uf, show(args, d)))


def check_info(r, e, d, exe):
    args = [exe, 'info', '--output=json', e['image']]
    rc, out, err = uq(args, d)
    if rc != 0:
        return r.fail('info: exit %s: %s' % (rc, line1(err)))
    try:
        ui = json.loads(out)
    except ValueError as x:
        return r.fail('info: bad JSON (%s): %r' % (x, out[:200]))

    def get(obj, key):
        for k in key.split('.'):
            if not isinstance(obj, dict) or k not in obj:
                return KeyError
            obj = obj[k]
        return obj
    for key in INFO_KEYS + INFO_NOTE_KEYS:
        qv, uv = get(e['qemu_info'], key), get(ui, key)
        if qv is not KeyError and qv != uv:
            msg = 'info %s: qemu %r, uqcow %r' % (key, qv, None if uv is KeyError else uv)
            (r.fail if key in INFO_KEYS else r.note)(msg + '  [%s]' % show(args, d))


def check_convert(r, e, d, exe, raw):
    out = os.path.join(d, e['image'] + '.uqcow.raw')
    args = [exe, 'convert', '-O', 'raw', e['image'], os.path.relpath(out, d)]
    rc, _, err = uq(args, d)
    if rc != 0:
        return r.fail('convert: exit %s: %s  [%s]' % (rc, line1(err), show(args, d)))
    sz = os.path.getsize(out)
    off = first_diff(raw, out)
    if off is not None:
        r.fail('convert: output differs from qemu-img convert at offset %d (sizes %d, %d)'
               '  [%s; cmp %s %s]' % (off, os.path.getsize(raw), sz, show(args, d), raw, out))
    else:
        os.unlink(out)


def check_compare(r, e, d, exe, raw):
    rel = os.path.relpath(raw, d)
    args = [exe, 'compare', e['image'], rel]
    rc, _, err = uq(args, d)
    if rc != 0:
        r.fail('compare: exit %s against the expected raw, want 0: %s  [%s]' %
               (rc, line1(err), show(args, d)))
    spots = [e['size'] - 1] + [c[1] + c[2] // 2 for c in e['checks'][:1]]
    with open(raw, 'r+b') as f:
        for off in spots:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0x40]))
            f.flush()
            try:
                rc, _, err = uq(args, d)
            finally:
                f.seek(off)
                f.write(b)
                f.flush()
            if rc != 1:
                r.fail('compare: exit %s with byte %d of the raw modified, want 1: %s' %
                       (rc, off, line1(err)))


def check_io(r, e, d, exe):
    # through the psync backend: convert, map and compare cover the default one
    cmd = lambda c: 'read -P 0x%02x %d %d' % tuple(c)
    args = [exe, 'io', '-r']
    for c in e['checks']:
        args += ['-c', cmd(c)]
    rc, _, err = uq(args + [e['image']], d, PSYNC)
    if rc != 0:
        for c in e['checks']:
            a = [exe, 'io', '-r', '-c', cmd(c), e['image']]
            rc, _, err = uq(a, d, PSYNC)
            if rc != 0:
                r.fail('io: exit %s, want 0: %s  [%s]' % (rc, line1(err), show(a, d, PSYNC)))
                break
        else:
            r.fail('io: exit %s with %d commands, each passes alone' % (rc, len(e['checks'])))
    for c in e['bad']:
        a = [exe, 'io', '-r', '-c', cmd(c), e['image']]
        rc, _, err = uq(a, d, PSYNC)
        if rc != 1:
            r.fail('io: exit %s with a wrong pattern, want 1: %s  [%s]' %
                   (rc, line1(err), show(a, d, PSYNC)))


def check_image(e, root, exe):
    # uqcow runs in the image's directory: qemu 7.2 opens a relative data file
    # name relative to the working directory, uqcow relative to the image.
    r = Result(e['name'])
    d = os.path.join(root, os.path.dirname(e['image']))
    e = dict(e, image=os.path.basename(e['image']))
    raw = e['raw'] and os.path.join(root, e['raw'])
    t0 = time.monotonic()
    try:
        check_info(r, e, d, exe)
        check_map(r, e, d, exe, raw)
        check_io(r, e, d, exe)
        if raw:
            check_convert(r, e, d, exe, raw)
            check_compare(r, e, d, exe, raw)
    except Exception as x:       # report, don't abort the other images
        r.fail('test error: %r' % x)
    r.secs = time.monotonic() - t0
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--uqcow', default=os.environ.get('UQCOW'), help='uqcow binary')
    ap.add_argument('--quick', action='store_true', help='a small subset')
    ap.add_argument('--images', help='reuse images generated into this directory')
    ap.add_argument('--only', nargs='*', help='image spec names')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('-j', '--jobs', type=int, default=2)
    ap.add_argument('--wrapper', help='command prefix for uqcow, e.g. "valgrind -q '
                    '--error-exitcode=99" (with UQCOW_IO=psync: valgrind cannot see io_uring)')
    ap.add_argument('-k', '--keep', action='store_true', help='keep the images')
    ap.add_argument('-v', '--verbose', action='store_true')
    a = ap.parse_args()
    exe, rc = interop_common.setup(a.uqcow, 'interop')
    if not exe:
        return rc
    WRAP[:] = (a.wrapper or '').split()
    t0 = time.monotonic()
    if a.images and os.path.exists(os.path.join(a.images, 'manifest.json')):
        root = a.images
        with open(os.path.join(root, 'manifest.json')) as f:
            manifest = [e for e in json.load(f)
                        if not a.only or e['name'].split('.')[0] in a.only]
    else:
        root = a.images or tempfile.mkdtemp(prefix='uqcow-interop-')
        try:
            manifest = gen_images.generate(root, a.quick, a.seed, a.jobs, a.only)
        except gen_images.GenError as x:
            print('interop: image generation failed: %s\ninterop: images kept in %s' % (x, root))
            return 1
    tgen = time.monotonic() - t0
    results = []
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
        for r in ex.map(lambda e: check_image(e, root, exe), manifest):
            results.append(r)
            print('%s %s (%.1fs)' % ('FAIL' if r.fails else 'ok  ', r.name, r.secs))
            for m in r.fails:
                print('    ' + m)
            if a.verbose:
                for m in r.notes[:20]:
                    print('    note: ' + m)
                if len(r.notes) > 20:
                    print('    note: ... %d more' % (len(r.notes) - 20))
            sys.stdout.flush()
    failed = [r.name for r in results if r.fails]
    print('interop: %d passed, %d failed (%.0fs: %.0fs generating, seed %d)' %
          (len(results) - len(failed), len(failed), time.monotonic() - t0, tgen, a.seed))
    if failed:
        print('interop: failed: ' + ' '.join(failed))
        print('interop: images kept in ' + root)
        return 1
    if not a.keep and not a.images:
        shutil.rmtree(root)
    return 0


if __name__ == '__main__':
    sys.exit(main())
