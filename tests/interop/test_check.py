#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Check and repair interop: damaged images get qemu-img check's verdict.

Usage: test_check.py --uqcow PATH [--quick] [--only CASE ...] [-j N] [-k] [-v]

For each geometry (refcount_bits 1, 16 and 64 at cluster sizes 512 and
64k, plus extended L2 and bitmaps) builds an image with qemu-img/qemu-io,
damages it on purpose (struct patches: leaks, refcounts too low, a lost
refcount block, wrong COPIED flags, overlapping clusters, the qemu-iotests
060 cases, reserved bits) and asserts:
  - `uqcow check` exits like `qemu-img check` and prints the same human
    summary and the same JSON (filename aside);
  - after `uqcow check -r leaks|all` on a copy the exit code matches
    qemu-img's own repair of another copy (or, where qemu-img gives up,
    uqcow's repair leaves an image qemu-img calls clean), `qemu-img check`
    of uqcow's repaired copy agrees with `uqcow check` of it, is clean
    wherever qemu-img's own repair got a clean image, and the guest data
    that the damage did not touch reads back unchanged.
Known, intended differences are listed in DIVERGE with the reason.
Exit 0 all passed, 1 any failure, 77 qemu-img/qemu-io missing.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import interop_common

M64 = (1 << 64) - 1
OFF_MASK = 0x00fffffffffffe00
COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1
MiB = 1 << 20

# Cases where uqcow differs from qemu-img 7.2 on purpose.
DIVERGE = {
    # uqcow's header decoder refuses these (docs/ARCHITECTURE.md: a hostile header is
    # refused with exit 1); qemu-img reads on and repairs them
    'zero_reftable_size': 'open refused',
    'zero_reftable_offset': 'open refused',
}
# Repairs where qemu-img 7.2 gives up (exit 1: its overlap check trips on
# the structure it is repairing) and uqcow repairs, or reports what is left.
REPAIR_BETTER = {'unaligned_reftable_entry', 'dirty_corrupt', 'reserved_reftable',
                 'l2_into_l1'}


class Fail(Exception):
    pass


def run(args, cwd=None, timeout=600, env=None):
    p = subprocess.run(args, cwd=cwd, capture_output=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout.decode(errors='replace'), p.stderr.decode(errors='replace')


def must(args, cwd=None):
    rc, out, err = run(args, cwd)
    if rc != 0:
        raise Fail('%s: exit %d: %s' % (' '.join(args), rc, err.strip()[:300]))
    return out


class Img:
    """Just enough of the format to find structures and patch them."""

    def __init__(self, path):
        self.path = path
        with open(path, 'rb') as f:
            h = f.read(112)
        (_, self.version, _, _, self.cb, self.size, _, self.l1_size, self.l1_off,
         self.rt_off, self.rt_clusters, self.nsnap, self.snap_off) = \
            struct.unpack('>IIQIIQIIQQIIQ', h[:72])
        if self.version >= 3:
            self.incompat, _, _, self.order, _ = struct.unpack('>QQQII', h[72:104])
        else:
            self.incompat, self.order = 0, 4
        self.cs = 1 << self.cb
        self.ext = bool(self.incompat & 16)
        self.eb = 16 if self.ext else 8
        self.l2_entries = self.cs // self.eb
        self.rb_entries = self.cs * 8 >> self.order
        self.coff_mask = (1 << (62 - (self.cb - 8))) - 1

    def rd(self, off, n):
        with open(self.path, 'rb') as f:
            f.seek(off)
            return f.read(n).ljust(n, b'\0')

    def wr(self, off, b):
        with open(self.path, 'r+b') as f:
            f.seek(off)
            f.write(b)

    def u64(self, off):
        return struct.unpack('>Q', self.rd(off, 8))[0]

    def put64(self, off, v):
        self.wr(off, struct.pack('>Q', v & M64))

    def l1_addr(self, guest):
        return self.l1_off + 8 * (guest // (self.cs * self.l2_entries))

    def l2_off(self, guest):
        return self.u64(self.l1_addr(guest)) & OFF_MASK

    def l2e_addr(self, guest):
        return self.l2_off(guest) + ((guest >> self.cb) % self.l2_entries) * self.eb

    def l2e(self, guest):
        return self.u64(self.l2e_addr(guest))

    def host(self, guest):
        return self.l2e(guest) & OFF_MASK

    def cluster(self, guest):
        return self.host(guest) >> self.cb

    def comp_cluster(self, guest):
        return (self.l2e(guest) & self.coff_mask) >> self.cb

    def rt(self, i):
        return self.u64(self.rt_off + 8 * i)

    def _rc_where(self, c):
        blk = self.rt(c // self.rb_entries) & ~0x1ff
        bit = (c % self.rb_entries) << self.order
        return blk + bit // 8, bit % 8, 1 << self.order

    def get_rc(self, c):
        at, shift, bits = self._rc_where(c)
        if bits < 8:
            return (self.rd(at, 1)[0] >> shift) & ((1 << bits) - 1)
        return int.from_bytes(self.rd(at, bits // 8), 'big')

    def set_rc(self, c, v):
        at, shift, bits = self._rc_where(c)
        if bits < 8:
            m = ((1 << bits) - 1) << shift
            self.wr(at, bytes([(self.rd(at, 1)[0] & ~m) | ((v << shift) & m)]))
        else:
            self.wr(at, v.to_bytes(bits // 8, 'big'))

    def append_cluster(self):
        """A fresh zero cluster at the end of the file; its index."""
        n = (os.path.getsize(self.path) + self.cs - 1) // self.cs
        os.truncate(self.path, (n + 1) * self.cs)
        return n

    def snap_l1_off(self):
        return self.u64(self.snap_off)


# ---- the damage cases: each patches img and returns the guest ranges
# ---- [start, end) whose data the damage destroyed (None: all of it)

G0, G2, GC, GZ, G5 = 0, 1 * MiB, 2 * MiB, 3 * MiB, 5 * MiB


def g1(img):
    return img.cs


def l1_span(img, guest):
    span = img.cs * img.l2_entries
    start = guest // span * span
    return [(start, min(start + span, img.size))]


def c_clean(img):
    return []


def c_leak_free(img):
    img.set_rc(img.append_cluster(), 1)
    return []


def c_leak_raise(img):
    img.set_rc(img.cluster(G2), 2)
    return []


def c_low_data(img):
    img.set_rc(img.cluster(G2), 0)
    return []


def c_low_l2(img):
    img.set_rc(img.l2_off(G2) >> img.cb, 0)
    return []


def c_low_compressed(img):
    img.set_rc(img.comp_cluster(GC), 0)
    return []


def c_lost_refblock(img):
    img.put64(img.rt_off, 0)
    return []


def c_empty_refblock(img):
    img.wr(img.rt(0) & ~0x1ff, bytes(img.cs))
    return []


def c_copied_l1(img):
    img.put64(img.l1_addr(G2), img.u64(img.l1_addr(G2)) & ~COPIED)
    return []


def c_copied_l2(img):
    img.put64(img.l2e_addr(G2), img.l2e(G2) & ~COPIED)
    return []


def c_copied_shared(img):
    # in the snapshot image G2's cluster has refcount 2: COPIED is wrong
    img.put64(img.l2e_addr(G2), img.l2e(G2) | COPIED)
    return []


def c_overlap(img):
    img.put64(img.l2e_addr(g1(img)), img.l2e(G0))
    return [(g1(img), 2 * img.cs)]


def c_compressed_copied(img):
    img.put64(img.l2e_addr(GC), img.l2e(GC) | COPIED)
    return []


def c_l2_into_l1(img):
    # 060: the first L1 entry names the L1 table as its L2 table
    img.put64(img.l1_off, COPIED | img.l1_off)
    return l1_span(img, 0)


def c_data_into_refblock(img):
    # 060: a guest cluster mapped onto the refcount block
    img.put64(img.l2e_addr(G5), COPIED | (img.rt(0) & ~0x1ff))
    return [(G5, G5 + img.cs)]


def c_data_into_inactive_l2(img):
    # 060: the snapshot's own L2 table maps a cluster onto the active one
    snap_l2 = img.u64(img.snap_l1_off()) & OFF_MASK
    img.put64(snap_l2, COPIED | img.l2_off(G0))
    return []


def c_unaligned_l1(img):
    img.put64(img.l1_addr(G0), COPIED | (img.l2_off(G0) + 0x2a00))
    return l1_span(img, G0)


def c_unaligned_l2(img):
    img.put64(img.l2e_addr(G2), COPIED | (img.host(G2) + 0x2a00))
    return [(G2, G2 + img.cs)]


def c_unaligned_zero(img):
    at = img.l2e_addr(G2)
    if img.ext:
        # with extended L2 a preallocated zero cluster is all-zero subclusters
        img.wr(at, struct.pack('>QQ', COPIED | (img.host(G2) + 0x2a00), 0xffffffff << 32))
    else:
        img.put64(at, COPIED | (img.host(G2) + 0x2a00) | ZERO)
    return [(G2, G2 + img.cs)]


def c_zero_in_header(img):
    # 060: a preallocated zero cluster inside the header
    img.put64(img.l2e_addr(G5), COPIED | 0x2a00 | ZERO)
    return []


def c_unaligned_reftable_entry(img):
    img.put64(img.rt_off, img.rt(0) + 0x2a00)
    return []


def c_dirty_corrupt(img):
    # 060: unaligned refcount block and the dirty bit
    img.put64(img.rt_off, 0xffff2a00)
    img.put64(72, img.u64(72) | 1)
    return []


def c_refblock_outside(img):
    img.put64(img.rt_off + 8, 0x00ffffff00000000)
    return []


def c_refblock_far(img):
    # 060: a block far past the end of the file (qemu-img grows the file)
    img.put64(img.rt_off + 8, 0x1000000000)
    return []


def c_zero_reftable_size(img):
    img.wr(56, struct.pack('>I', 0))
    return []


def c_zero_reftable_offset(img):
    img.put64(48, 0)
    return []


def c_reserved_reftable(img):
    img.put64(img.rt_off, img.rt(0) | 1)
    return []


def c_reserved_l1(img):
    img.put64(img.l1_addr(G2), img.u64(img.l1_addr(G2)) | 1)
    return []


def c_reserved_l2(img):
    img.put64(img.l2e_addr(G2), img.l2e(G2) | 2)
    return []


def c_ext_bad_bitmap(img):
    # an allocated cluster whose subclusters are both allocated and zero
    img.wr(img.l2e_addr(G2) + 8, struct.pack('>Q', 0x00000001_00000001))
    return [(G2, G2 + img.cs)]


def c_ext_unalloc_bitmap(img):
    img.wr(img.l2e_addr(G5) + 8, struct.pack('>Q', 0x3))
    return []


# name: (function, needs): needs is a set of 'snap' (an internal snapshot:
# refcount_bits >= 2), 'big' (clusters above 512 bytes, for unaligned
# offsets), 'v3', 'ext' (extended L2 geometry only)
CASES = {
    'clean': (c_clean, set()),
    'leak_free': (c_leak_free, set()),
    'leak_raise': (c_leak_raise, {'wide'}),
    'low_data': (c_low_data, set()),
    'low_l2': (c_low_l2, set()),
    'low_compressed': (c_low_compressed, set()),
    'lost_refblock': (c_lost_refblock, set()),
    'empty_refblock': (c_empty_refblock, set()),
    'copied_l1': (c_copied_l1, set()),
    'copied_l2': (c_copied_l2, set()),
    'copied_shared': (c_copied_shared, {'snap'}),
    'overlap': (c_overlap, set()),
    'compressed_copied': (c_compressed_copied, set()),
    'l2_into_l1': (c_l2_into_l1, set()),
    'data_into_refblock': (c_data_into_refblock, set()),
    'data_into_inactive_l2': (c_data_into_inactive_l2, {'snap'}),
    'unaligned_l1': (c_unaligned_l1, {'big'}),
    'unaligned_l2': (c_unaligned_l2, {'big'}),
    'unaligned_zero': (c_unaligned_zero, {'big'}),
    'zero_in_header': (c_zero_in_header, {'big'}),
    'unaligned_reftable_entry': (c_unaligned_reftable_entry, {'big'}),
    'dirty_corrupt': (c_dirty_corrupt, {'big'}),
    'refblock_outside': (c_refblock_outside, set()),
    'refblock_far': (c_refblock_far, set()),
    'zero_reftable_size': (c_zero_reftable_size, set()),
    'zero_reftable_offset': (c_zero_reftable_offset, set()),
    'reserved_reftable': (c_reserved_reftable, set()),
    'reserved_l1': (c_reserved_l1, set()),
    'reserved_l2': (c_reserved_l2, set()),
    'ext_bad_bitmap': (c_ext_bad_bitmap, {'ext'}),
    'ext_unalloc_bitmap': (c_ext_unalloc_bitmap, {'ext'}),
}

# name: (create options, what it offers)
GEOMETRIES = {
    'rc1-512': ('refcount_bits=1,cluster_size=512', set()),
    'rc16-512': ('refcount_bits=16,cluster_size=512', {'snap', 'wide'}),
    'rc64-512': ('refcount_bits=64,cluster_size=512', {'snap', 'wide'}),
    'rc1-64k': ('refcount_bits=1,cluster_size=65536', {'big'}),
    'rc16-64k': ('refcount_bits=16,cluster_size=65536', {'snap', 'wide', 'big'}),
    'rc64-64k': ('refcount_bits=64,cluster_size=65536', {'snap', 'wide', 'big'}),
    'extl2-64k': ('extended_l2=on,cluster_size=65536', {'wide', 'big', 'ext', 'only'}),
    'bitmaps-64k': ('cluster_size=65536', {'wide', 'big', 'bitmaps', 'only'}),
}
ONLY_CASES = {
    'extl2-64k': {'clean', 'leak_raise', 'low_data', 'copied_l2', 'overlap',
                  'ext_bad_bitmap', 'ext_unalloc_bitmap', 'unaligned_zero'},
    'bitmaps-64k': {'clean', 'leak_free', 'low_data', 'lost_refblock'},
}
QUICK = {'rc1-512', 'rc16-64k', 'extl2-64k'}


def build(d, opts, feats, snap):
    """The undamaged image: data, compressed, zero and (with snap) a
    snapshot and a rewrite after it."""
    img = os.path.join(d, 'base.qcow2')
    must(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', opts, img, '64M'])
    cs = Img(img).cs
    cmds = ['write -P 0x11 0 %d' % (2 * cs), 'write -P 0x22 %d %d' % (G2, cs),
            'write -c -P 0x33 %d %d' % (GC, cs), 'write -P 0x44 %d %d' % (GZ, cs),
            'write -z %d %d' % (GZ, cs), 'write -P 0x66 %d %d' % (G5 + cs, cs)]
    args = ['qemu-io', '-f', 'qcow2']
    for c in cmds:
        args += ['-c', c]
    must(args + [img])
    if snap:
        must(['qemu-img', 'snapshot', '-c', 's1', img])
        must(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x55 0 %d' % cs, img])
    if 'bitmaps' in feats:
        must(['qemu-img', 'bitmap', '--add', img, 'b0'])
        must(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x77 %d %d' % (4 * MiB, 4 * cs), img])
    return img


def check(tool, exe, img, args=()):
    cmd = ([exe] if tool == 'uq' else ['qemu-img']) + ['check'] + list(args) + [img]
    return run(cmd, cwd=os.path.dirname(img))


def jcheck(tool, exe, img):
    rc, out, err = check(tool, exe, img, ['--output=json'])
    try:
        j = json.loads(out) if out.strip() else None
    except ValueError:
        raise Fail('%s check --output=json: bad JSON %r' % (tool, out[:200]))
    if j:
        j.pop('filename', None)
    return rc, j, out, err


def same_ranges(a, b, cs, skip):
    """First differing offset of two raw files outside skip, or None."""
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        off = 0
        while True:
            x, y = fa.read(MiB), fb.read(MiB)
            if not x and not y:
                return None
            if x != y:
                for i in range(0, max(len(x), len(y)), cs):
                    p = off + i
                    if any(s <= p < e for s, e in skip):
                        continue
                    if x[i:i + cs] != y[i:i + cs]:
                        return p
            off += MiB


def run_case(root, exe, gname, cname, verbose):
    opts, feats = GEOMETRIES[gname]
    fn, needs = CASES[cname]
    d = os.path.join(root, '%s.%s' % (gname, cname))
    os.makedirs(d)
    notes, fails = [], []
    base = build(d, opts, feats, 'snap' in needs)
    pre = os.path.join(d, 'pre.raw')
    must(['qemu-img', 'convert', '-O', 'raw', base, pre])
    img = Img(base)
    skip = fn(img)
    div = DIVERGE.get(cname)

    # -- check only: exit code, human summary and JSON as qemu-img's
    qrc, qj, _, qerr = jcheck('qemu', exe, base)
    urc, uj, uout, uerr = jcheck('uq', exe, base)
    qh = check('qemu', exe, base)
    uh = check('uq', exe, base)
    if div:
        notes.append('check: qemu %d, uqcow %d (%s)' % (qrc, urc, div))
        if urc != 1:
            fails.append('check: exit %d, expected 1 (%s)' % (urc, div))
    else:
        if urc != qrc:
            fails.append('check: exit %d, qemu-img %d; uqcow stderr: %s | qemu stderr: %s' %
                         (urc, qrc, uerr.strip()[:400], qerr.strip()[:400]))
        elif uj != qj:
            fails.append('check --output=json: uqcow %s, qemu-img %s' % (uj, qj))
        elif uh[1] != qh[1]:
            fails.append('check: human output differs:\n%s\n--- qemu-img:\n%s' % (uh[1], qh[1]))
        if uh[0] != urc:
            fails.append('check: exit %d human, %d json' % (uh[0], urc))
    if verbose:
        notes.append('check: exit %d/%d, json %s' % (urc, qrc, uj))

    # -- repairs, each on its own copy
    for mode in ('leaks', 'all'):
        uimg = os.path.join(d, 'uq-%s.qcow2' % mode)
        qimg = os.path.join(d, 'qemu-%s.qcow2' % mode)
        shutil.copyfile(base, uimg)
        shutil.copyfile(base, qimg)
        urc, uout, uerr = check('uq', exe, uimg, ['-r', mode])
        qrc, qout, qerr = check('qemu', exe, qimg, ['-r', mode])
        after_q = check('qemu', exe, qimg)[0]      # qemu-img on its own repair
        after_u = check('qemu', exe, uimg)[0]      # qemu-img on uqcow's repair
        recheck = check('uq', exe, uimg)[0]        # uqcow on uqcow's repair
        what = '-r %s: uqcow exit %d (then qemu-img check %d), qemu-img %d (then %d)' % (
            mode, urc, after_u, qrc, after_q)
        if verbose:
            notes.append(what)
        if div:
            if urc != 1 or open(uimg, 'rb').read() != open(base, 'rb').read():
                fails.append(what + ': expected exit 1 and an untouched file (%s)' % div)
            continue
        if urc != qrc and not (cname in REPAIR_BETTER and qrc == 1):
            fails.append(what + '; uqcow stderr: ' + uerr.strip()[:500])
        if urc in (0, 2, 3) and after_u != urc:
            fails.append(what + ': qemu-img disagrees with the repaired verdict')
        if recheck != after_u:
            fails.append(what + ': uqcow check of the repaired image exits %d' % recheck)
        if after_q == 0 and after_u != 0:
            fails.append(what + ': qemu-img repaired its copy, uqcow did not')
        if mode == 'all' and skip is not None:
            raw = os.path.join(d, 'uq-all.raw')
            rc, _, err = run(['qemu-img', 'convert', '-O', 'raw', uimg, raw])
            if rc != 0:
                qraw = os.path.join(d, 'qemu-all.raw')
                if run(['qemu-img', 'convert', '-O', 'raw', qimg, qraw])[0] == 0:
                    fails.append(what + ': qemu-img convert of the repaired image '
                                 'fails: ' + err.strip()[:200])
            else:
                bad = same_ranges(pre, raw, img.cs, skip)
                if bad is not None:
                    fails.append(what + ': intact guest data changed at offset %d' % bad)
    return '%s.%s' % (gname, cname), fails, notes, d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--uqcow', default=os.environ.get('UQCOW'), help='uqcow binary')
    ap.add_argument('--quick', action='store_true', help='three geometries only')
    ap.add_argument('--only', nargs='*', help='case names (or geometry names)')
    ap.add_argument('-j', '--jobs', type=int, default=2)
    ap.add_argument('-k', '--keep', action='store_true', help='keep the images')
    ap.add_argument('-v', '--verbose', action='store_true')
    a = ap.parse_args()
    exe, rc = interop_common.setup(a.uqcow, 'check')
    if not exe:
        return rc
    jobs = []
    for g, (_, feats) in GEOMETRIES.items():
        if a.quick and g not in QUICK:
            continue
        for c, (_, needs) in CASES.items():
            if a.only and c not in a.only and g not in a.only:
                continue
            if 'only' in feats and c not in ONLY_CASES[g]:
                continue
            if not needs <= feats:
                continue
            jobs.append((g, c))
    root = tempfile.mkdtemp(prefix='uqcow-check-')
    t0 = time.monotonic()
    failed = []

    def one(job):
        try:
            return run_case(root, exe, job[0], job[1], a.verbose)
        except (Fail, subprocess.TimeoutExpired, OSError, struct.error) as x:
            return '%s.%s' % job, ['setup: %s' % x], [], None

    with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
        for name, fails, notes, d in ex.map(one, jobs):
            print('%s %s' % ('FAIL' if fails else 'ok  ', name))
            for m in fails:
                print('    ' + m)
            for m in notes if a.verbose or fails else []:
                print('    note: ' + m)
            sys.stdout.flush()
            if fails:
                failed.append(name)
            elif d and not a.keep:
                shutil.rmtree(d, ignore_errors=True)
    print('check: %d passed, %d failed (%.0fs)' % (len(jobs) - len(failed), len(failed),
                                                  time.monotonic() - t0))
    if failed:
        print('check: failed: ' + ' '.join(failed))
        print('check: images kept in ' + root)
        return 1
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
