#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Internal snapshots interop: qemu-img and uqcow read and apply each other's.

Usage: test_snapshot.py --uqcow PATH [--quick] [--seed N] [--only NAME ...] [-v] [-k]

Snapshots made by `qemu-img snapshot -c` are listed, read (convert/map/compare
-l) and applied by uqcow; snapshots made by `uqcow snapshot -c` are listed, read
and applied by qemu-img.  After every step `qemu-img check` must be clean (no
corruption, no leak) and the contents must match raw mirrors kept here.  A
seeded random workload interleaves snapshot create/apply/delete with writes,
compressed writes, write-zeroes, discards and growth at refcount widths 2..64,
with one mirror per snapshot.  refcount_bits=1 must refuse a snapshot and
leave the file byte-identical; a narrow width must refuse an overflowing
snapshot the same way.  Writes go through `uqcow io` (qemu-io where uqcow has
no write command yet).  Exit 0 all passed, 1 any failure, 77 no qemu-img.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import interop_common

FAST_SIZE = 512 << 10


class Fail(Exception):
    pass


class Env:
    def __init__(self, exe, root, verbose):
        self.exe, self.root, self.verbose = exe, root, verbose
        self.d = root
        self.notes = []
        helps = {v: self.run([exe, v, '--help']) for v in ('io', 'create', 'resize')}
        self.uq_write = helps['io'][0] == 0 and 'write [' in helps['io'][1]
        self.uq_create = helps['create'][0] == 0
        self.uq_resize = helps['resize'][0] == 0

    def run(self, args, ok=None):
        p = subprocess.run(args, cwd=self.d, capture_output=True, timeout=600)
        out, err = p.stdout.decode(errors='replace'), p.stderr.decode(errors='replace')
        if self.verbose:
            print('    $ %s -> %d' % (' '.join(args), p.returncode))
        if ok is not None and p.returncode not in ok:
            raise Fail('cd %s && %s: exit %d\n%s%s' % (self.d, ' '.join(args), p.returncode,
                                                       out[-2000:], err[-2000:]))
        return p.returncode, out, err

    def uq(self, *args, ok=(0,)):
        return self.run([self.exe] + list(args), ok)

    def qimg(self, *args, ok=(0,)):
        return self.run(['qemu-img'] + list(args), ok)

    def path(self, name):
        return os.path.join(self.d, name)

    # ---- image preparation: uqcow where it can, qemu otherwise ----

    def create(self, img, size, opts, by_uqcow=True):
        tool = [self.exe] if by_uqcow and self.uq_create else ['qemu-img']
        self.run(tool + ['create', '-q', '-f', 'qcow2', '-o', opts, img, str(size)], (0,))

    def io(self, img, cmds, by_uqcow=True):
        if by_uqcow and self.uq_write:
            args = [self.exe, 'io']
        else:
            args = ['qemu-io', '-f', 'qcow2']
        for c in cmds:
            args += ['-c', c]
        self.run(args + [img], (0,))

    def resize(self, img, size):
        tool = [self.exe] if self.uq_resize else ['qemu-img']
        self.run(tool + ['resize', img, str(size)], (0,))


class Mirror:
    """The expected guest contents of the active state."""

    def __init__(self, size):
        self.b = bytearray(size)

    def copy(self):
        m = Mirror(0)
        m.b = bytearray(self.b)
        return m

    def fill(self, off, n, pat):
        self.b[off:off + n] = bytes([pat]) * n

    def resize(self, size):
        if size > len(self.b):
            self.b += bytes(size - len(self.b))
        else:
            del self.b[size:]


def sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_clean(env, img, when):
    rc, out, err = env.qimg('check', img, ok=None)
    if rc != 0:
        raise Fail('qemu-img check %s after %s: exit %d\n%s%s' % (img, when, rc, out, err))


def raw_of(env, img, snap=None, tool='uqcow'):
    out = env.path('out.raw')
    if os.path.exists(out):
        os.unlink(out)
    sn = ['-l', snap] if snap else []
    if tool == 'uqcow':
        env.uq('convert', *sn, '-O', 'raw', img, out)
    else:
        env.qimg('convert', *sn, '-f', 'qcow2', '-O', 'raw', img, out)
    with open(out, 'rb') as f:
        return f.read()


def expect_content(env, img, m, when, snap=None, tool='uqcow'):
    got = raw_of(env, img, snap, tool)
    if snap and tool == 'qemu':
        # qemu-img convert -l keeps the active virtual size (zeros past the
        # snapshot's end, or its data cut off); uqcow uses the snapshot's own
        if len(got) > len(m.b) and not any(got[len(m.b):]):
            got = got[:len(m.b)]
        elif len(got) < len(m.b):
            cut = Mirror(0)
            cut.b = m.b[:len(got)]
            m = cut
    if got != bytes(m.b):
        n = min(len(got), len(m.b))
        at = next((i for i in range(n) if got[i] != m.b[i]), n)
        raise Fail('%s: %s%s read by %s differs from the mirror at byte %d (size %d, '
                   'expected %d)' % (when, img, ' snapshot ' + snap if snap else '', tool,
                                     at, len(got), len(m.b)))


def expect_active_qemu(env, img, m, when):
    """qemu-img reads the active state (strict: the size must match too)."""
    mr = env.path('mirror.raw')
    with open(mr, 'wb') as f:
        f.write(m.b)
    rc, out, err = env.qimg('compare', '-s', '-f', 'qcow2', '-F', 'raw', img, mr, ok=None)
    if rc != 0:
        # -s also compares allocation; fall back to content + size
        info = json.loads(env.qimg('info', '--output=json', img)[1])
        if info['virtual-size'] != len(m.b):
            raise Fail('%s: virtual size %d, expected %d' % (when, info['virtual-size'],
                                                              len(m.b)))
        rc, out, err = env.qimg('compare', '-f', 'qcow2', '-F', 'raw', img, mr, ok=None)
        if rc != 0:
            raise Fail('%s: qemu-img compare with the mirror: %s%s' % (when, out, err))


def snap_table(path):
    """(id, name, extra bytes, raw entry bytes) of each snapshot table entry."""
    with open(path, 'rb') as f:
        d = f.read()
    nb, off = struct.unpack('>IQ', d[60:72])
    res = []
    for _ in range(nb):
        _, _, il, nl, _, _, _, _, es = struct.unpack('>QIHHIIQII', d[off:off + 40])
        ln = (40 + es + il + nl + 7) & ~7
        e = d[off:off + ln]
        res.append((e[40 + es:40 + es + il].decode(), e[40 + es + il:40 + es + il + nl].decode(),
                    e[40:40 + es], e))
        off += ln
    return res


def list_same(env, img, when):
    a = env.uq('snapshot', '-l', img)[1]
    b = env.qimg('snapshot', '-l', img)[1]
    if a != b:
        raise Fail('%s: uqcow snapshot -l differs from qemu-img:\n%s---\n%s' % (when, a, b))


# ---- fixed scenarios ----

VARIANTS = [
    ('v3-64k', 'cluster_size=65536'),
    ('v2-4k', 'compat=0.10,cluster_size=4096'),
    ('extl2', 'extended_l2=on,cluster_size=65536'),
    ('rb4-4k', 'refcount_bits=4,cluster_size=4096'),
    ('zstd-lazy', 'compression_type=zstd,lazy_refcounts=on,cluster_size=4096'),
]


def workload_a(env, img, m, by_uqcow, cs):
    """Data, a compressed cluster and a zeroed range."""
    env.io(img, ['write -P 0x11 0 %d' % (3 * cs), 'write -P 0x12 %d 1000' % (8 * cs + 100),
                 'write -c -P 0x13 %d %d' % (16 * cs, cs), 'write -z %d %d' % (cs, cs)], by_uqcow)
    m.fill(0, 3 * cs, 0x11)
    m.fill(8 * cs + 100, 1000, 0x12)
    m.fill(16 * cs, cs, 0x13)
    m.fill(cs, cs, 0)


def workload_b(env, img, m, by_uqcow, cs):
    """Overwrite shared data partly and wholly, and add new data."""
    env.io(img, ['write -P 0x21 100 200', 'write -P 0x22 %d %d' % (2 * cs, cs),
                 'write -P 0x23 %d %d' % (16 * cs + 10, 10),
                 'write -P 0x24 %d %d' % (40 * cs, 2 * cs)], by_uqcow)
    m.fill(100, 200, 0x21)
    m.fill(2 * cs, cs, 0x22)
    m.fill(16 * cs + 10, 10, 0x23)
    m.fill(40 * cs, 2 * cs, 0x24)


def workload_c(env, img, m, by_uqcow, cs):
    env.io(img, ['write -P 0x31 %d %d' % (cs // 2, cs), 'discard %d %d' % (40 * cs, cs)],
           by_uqcow)
    m.fill(cs // 2, cs, 0x31)
    m.fill(40 * cs, cs, 0)


def cs_of(opts):
    for kv in opts.split(','):
        if kv.startswith('cluster_size='):
            return int(kv.split('=')[1])
    return 65536


def qemu_made(env, name, opts):
    """qemu-img takes the snapshots; uqcow lists, reads, applies, deletes."""
    img, cs, size = name + '.qcow2', cs_of(opts), 4 << 20
    env.qimg('create', '-q', '-f', 'qcow2', '-o', opts, img, str(size))
    m = Mirror(size)
    workload_a(env, img, m, False, cs)
    env.qimg('snapshot', '-c', 's1', img)
    m1 = m.copy()
    workload_b(env, img, m, False, cs)
    env.qimg('snapshot', '-c', 's2', img)
    m2 = m.copy()
    workload_c(env, img, m, False, cs)
    list_same(env, img, 'qemu-made snapshots')
    qi = json.loads(env.qimg('info', '--output=json', img)[1]).get('snapshots')
    ui = json.loads(env.uq('info', '--output=json', img)[1]).get('snapshots')
    if qi != ui:
        raise Fail('info --output=json snapshots differ:\n%r\n%r' % (ui, qi))
    expect_content(env, img, m1, 'qemu-made', 's1')
    expect_content(env, img, m2, 'qemu-made', 'snapshot.id=2')
    expect_content(env, img, m1, 'qemu-made', 'snapshot.name=s1')
    expect_content(env, img, m2, 'qemu-made', 'snapshot.id=2,snapshot.name=s2')
    if env.uq('convert', '-l', 'snapshot.id=1,snapshot.name=s2', '-O', 'raw', img,
              'x.raw', ok=None)[0] == 0:
        raise Fail('convert -l with a mismatched id and name succeeded')
    if env.uq('convert', '-l', 'nosuch', '-O', 'raw', img, 'x.raw', ok=None)[0] == 0:
        raise Fail('convert -l of a missing snapshot succeeded')
    expect_content(env, img, m, 'qemu-made active')
    # map -l: whatever it calls unallocated or zero reads as zeros
    ext = [json.loads(ln.rstrip(',').strip('[]')) for ln in
           env.uq('map', '-l', 's1', '--output=json', img)[1].splitlines() if ln.strip()]
    if sum(e['length'] for e in ext) != size:
        raise Fail('map -l s1 covers %d bytes, not %d' % (sum(e['length'] for e in ext), size))
    for e in ext:
        if not e['data'] and any(m1.b[e['start']:e['start'] + e['length']]):
            raise Fail('map -l s1 calls %r zero but the snapshot has data there' % e)
    with open(env.path('m1.raw'), 'wb') as f:
        f.write(m1.b)
    env.uq('compare', '-l', 's1', img, 'm1.raw')
    env.uq('compare', '-l', '1', '-L', 's1', img, img)
    if env.uq('compare', '-l', 's2', img, 'm1.raw', ok=(0, 1))[0] != 1:
        raise Fail('compare -l s2 against the mirror of s1 found no difference')
    env.uq('snapshot', '-a', 's1', img)
    check_clean(env, img, 'uqcow snapshot -a s1')
    m = m1.copy()
    expect_active_qemu(env, img, m, 'after uqcow -a s1')
    workload_c(env, img, m, True, cs)
    check_clean(env, img, 'writing after -a s1')
    expect_active_qemu(env, img, m, 'writing after -a s1')
    expect_content(env, img, m1, 'writing after -a s1', 's1', 'qemu')
    env.uq('snapshot', '-d', 's2', img)
    check_clean(env, img, 'uqcow snapshot -d s2')
    names = [n for _, n, _, _ in snap_table(env.path(img))]
    if names != ['s1']:
        raise Fail('after -d s2 the table holds %r' % names)
    expect_content(env, img, m1, 'after -d s2', 's1', 'qemu')
    expect_active_qemu(env, img, m, 'after -d s2')
    env.uq('snapshot', '-d', '1', img)
    check_clean(env, img, 'uqcow snapshot -d 1')
    if env.uq('snapshot', '-l', img)[1] != '':
        raise Fail('snapshot -l prints something for an image without snapshots')
    expect_active_qemu(env, img, m, 'after deleting every snapshot')


def uqcow_made(env, name, opts):
    """uqcow takes the snapshots; qemu-img lists, reads, applies, deletes."""
    img, cs, size = name + '.qcow2', cs_of(opts), 4 << 20
    env.create(img, size, opts)
    m = Mirror(size)
    workload_a(env, img, m, True, cs)
    env.uq('snapshot', '-c', 'u1', img)
    check_clean(env, img, 'uqcow snapshot -c u1')
    m1 = m.copy()
    workload_b(env, img, m, True, cs)
    check_clean(env, img, 'writing after -c u1')
    env.uq('snapshot', '-c', 'u2', img)
    check_clean(env, img, 'uqcow snapshot -c u2')
    m2 = m.copy()
    workload_c(env, img, m, True, cs)
    check_clean(env, img, 'writing after -c u2')
    list_same(env, img, 'uqcow-made snapshots')
    tab = snap_table(env.path(img))
    if [(i, n) for i, n, _, _ in tab] != [('1', 'u1'), ('2', 'u2')]:
        raise Fail('snapshot table holds %r' % [(i, n) for i, n, _, _ in tab])
    for _, n, extra, _ in tab:
        # as qemu-img 7.2 writes them: 64-bit VM state size, disk size, icount
        if len(extra) != 24 or struct.unpack('>QQQ', extra) != (0, size, 0):
            raise Fail('snapshot %s: extra data %s' % (n, extra.hex()))
    expect_content(env, img, m1, 'uqcow-made', 'u1', 'qemu')
    expect_content(env, img, m2, 'uqcow-made', 'u2', 'qemu')
    expect_active_qemu(env, img, m, 'uqcow-made active')
    env.qimg('snapshot', '-a', 'u1', img)
    check_clean(env, img, 'qemu-img snapshot -a u1')
    m = m1.copy()
    expect_content(env, img, m, 'after qemu-img -a u1')
    workload_c(env, img, m, True, cs)
    check_clean(env, img, 'uqcow writing after qemu-img -a u1')
    expect_active_qemu(env, img, m, 'uqcow writing after qemu-img -a u1')
    env.qimg('snapshot', '-d', 'u2', img)
    check_clean(env, img, 'qemu-img snapshot -d u2')
    env.uq('snapshot', '-c', 'u3', img)
    check_clean(env, img, 'uqcow snapshot -c u3')
    ids = [(i, n) for i, n, _, _ in snap_table(env.path(img))]
    if ids != [('1', 'u1'), ('2', 'u3')]:    # next ID: the largest plus one
        raise Fail('after -d u2, -c u3 the table holds %r' % ids)
    list_same(env, img, 'after -c u3')
    expect_content(env, img, m, 'after -c u3', 'u3', 'qemu')
    expect_content(env, img, m1, 'after -c u3', 'u1')


def disk_size(env):
    """A snapshot of an image resized later applies with its own size."""
    img = 'resized.qcow2'
    env.create(img, 1 << 20, 'cluster_size=65536')
    m = Mirror(1 << 20)
    env.io(img, ['write -P 0x41 0 100000'])
    m.fill(0, 100000, 0x41)
    env.uq('snapshot', '-c', 'small', img)
    small = m.copy()
    env.resize(img, 3 << 20)
    m.resize(3 << 20)
    env.io(img, ['write -P 0x42 %d 70000' % (2 << 20), 'write -P 0x43 5 5'])
    m.fill(2 << 20, 70000, 0x42)
    m.fill(5, 5, 0x43)
    check_clean(env, img, 'resize with a snapshot')
    env.uq('snapshot', '-c', 'big', img)
    big = m.copy()
    expect_content(env, img, small, 'resized', 'small')
    expect_content(env, img, small, 'resized', 'small', 'qemu')
    env.uq('snapshot', '-a', 'small', img)
    check_clean(env, img, 'apply small')
    expect_active_qemu(env, img, small, 'apply small')
    env.uq('snapshot', '-a', 'big', img)
    check_clean(env, img, 'apply big')
    expect_active_qemu(env, img, big, 'apply big')
    env.qimg('snapshot', '-a', 'small', img)
    check_clean(env, img, 'qemu-img apply small')
    expect_content(env, img, small, 'qemu-img apply small')
    env.uq('snapshot', '-a', '2', img)
    expect_content(env, img, big, 'apply 2')
    qi = json.loads(env.qimg('info', '--output=json', img)[1])
    if qi['virtual-size'] != 3 << 20:
        raise Fail('virtual size %d after applying big' % qi['virtual-size'])


def refcount_one(env):
    img = 'rb1.qcow2'
    env.create(img, 1 << 20, 'refcount_bits=1,cluster_size=4096')
    env.io(img, ['write -P 0x51 0 20000'])
    before = sha(env.path(img))
    rc, out, err = env.uq('snapshot', '-c', 'x', img, ok=(1,))
    want = 'snapshots need refcount_bits >= 2 (this image has 1); uqcow amend -o refcount_bits=16'
    if want not in err:
        raise Fail('refcount_bits=1: message %r lacks %r' % (err, want))
    if sha(env.path(img)) != before:
        raise Fail('refcount_bits=1: a refused snapshot changed the file')
    check_clean(env, img, 'refused snapshot')


def narrow(env):
    """refcount_bits=2 holds the active state and two snapshots of a cluster;
    4 bits hold 14 snapshots."""
    for bits, fits in ((2, 2), (4, 14)):
        img = 'rb%d.qcow2' % bits
        env.create(img, 1 << 20, 'refcount_bits=%d,cluster_size=4096' % bits)
        env.io(img, ['write -P 0x61 0 20000', 'write -c -P 0x62 65536 4096'])
        for i in range(fits):
            env.uq('snapshot', '-c', 'n%d' % i, img)
        check_clean(env, img, '%d snapshots at refcount_bits=%d' % (fits, bits))
        before = sha(env.path(img))
        rc, out, err = env.uq('snapshot', '-c', 'over', img, ok=(1,))
        if 'refcount overflow' not in err or sha(env.path(img)) != before:
            raise Fail('refcount_bits=%d: snapshot %d: %r, file %s' % (
                bits, fits + 1, err, 'unchanged' if sha(env.path(img)) == before else 'changed'))
        # a revert keeps what both states share: it fits although full
        env.uq('snapshot', '-a', 'n0', img)
        check_clean(env, img, 'apply at a full refcount_bits=%d' % bits)
        env.uq('snapshot', '-d', 'n1', img)
        env.uq('snapshot', '-c', 'again', img)
        check_clean(env, img, 'create after delete at refcount_bits=%d' % bits)


def extra_data(env):
    """Unknown extra data in a snapshot entry (up to 1 KiB) survives uqcow
    rewriting the table."""
    img = 'extra.qcow2'
    env.qimg('create', '-q', '-f', 'qcow2', img, '1M')
    env.io(img, ['write -P 0x71 0 4096'], False)
    env.qimg('snapshot', '-c', 'e1', img)
    env.qimg('snapshot', '-c', 'e2', img)
    p = env.path(img)
    with open(p, 'r+b') as f:
        d = bytearray(f.read())
        nb, off = struct.unpack('>IQ', d[60:72])
        ents = snap_table(p)
        out = b''
        for k, (_, _, extra, e) in enumerate(ents):
            if k == 0:
                es = struct.unpack('>I', e[36:40])[0]
                il, nl = struct.unpack('>HH', e[12:16])
                new_extra = extra + bytes(range(256)) * 3 + b'\xa5' * 40
                body = e[:36] + struct.pack('>I', len(new_extra)) + new_extra + \
                    e[40 + es:40 + es + il + nl]
                e = body + bytes(-len(body) % 8)
            out += e
        if len(out) > 65536:
            raise Fail('crafted table does not fit its cluster')
        f.seek(off)
        f.write(out)
    check_clean(env, img, 'crafting extra data')
    kept = snap_table(p)[0][3]
    env.uq('snapshot', '-c', 'e3', img)
    check_clean(env, img, 'uqcow -c with unknown extra data')
    env.uq('snapshot', '-d', 'e2', img)
    check_clean(env, img, 'uqcow -d with unknown extra data')
    t = snap_table(p)
    if t[0][3] != kept or [n for _, n, _, _ in t] != ['e1', 'e3']:
        raise Fail('the entry with unknown extra data was not kept byte for byte')
    list_same(env, img, 'unknown extra data')


def set_ids(path, ids):
    """Rewrite the IDs of the snapshot table's entries in place (the table
    keeps its cluster; only the ID bytes and lengths change)."""
    with open(path, 'r+b') as f:
        d = f.read()
        off = struct.unpack('>Q', d[64:72])[0]
        out = b''
        for (_, _, extra, e), sid in zip(snap_table(path), ids):
            il, nl = struct.unpack('>HH', e[12:16])
            es = len(extra)
            name = e[40 + es + il:40 + es + il + nl]
            body = e[:12] + struct.pack('>HH', len(sid), nl) + e[16:40 + es] + sid + name
            out += body + bytes(-len(body) % 8)
        f.seek(off)
        f.write(out)


def id_wrap(env):
    """qemu numbers a new snapshot one past the largest numeric ID; past
    ULONG_MAX that wraps onto a taken ID. uqcow's stays unique, so -a and -d
    by ID name the new snapshot."""
    img = 'ids.qcow2'
    env.qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '1M')
    m = Mirror(1 << 20)
    env.io(img, ['write -P 0x31 0 8192'], False)
    env.qimg('snapshot', '-c', 'a', img)
    env.qimg('snapshot', '-c', 'b', img)
    set_ids(env.path(img), [b'18446744073709551615', b'0'])
    check_clean(env, img, 'crafting the IDs')
    env.io(img, ['write -P 0x32 4096 4096'], False)
    m.fill(0, 4096, 0x31)
    m.fill(4096, 4096, 0x32)
    env.uq('snapshot', '-c', 'new', img)
    ids = [i for i, _, _, _ in snap_table(env.path(img))]
    if len(set(ids)) != len(ids) or ids[-1] != '1':
        raise Fail('IDs after a create past ULONG_MAX: %r (want unique, the new one 1)' % ids)
    env.io(img, ['write -P 0x33 0 8192'], False)
    env.uq('snapshot', '-a', '1', img)
    check_clean(env, img, 'applying the new snapshot by ID')
    expect_content(env, img, m, 'apply by ID after the wrap')
    env.uq('snapshot', '-d', '1', img)
    if [n for _, n, _, _ in snap_table(env.path(img))] != ['a', 'b']:
        raise Fail('delete by ID removed another snapshot')
    check_clean(env, img, 'deleting the new snapshot by ID')


def limits(env):
    """65536 snapshots is the most qcow2 allows: one more is refused with the
    file unchanged. The table is crafted (entries without an L1 table)."""
    img = 'full.qcow2'
    env.qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', img, '1M')
    p = env.path(img)
    tab = bytearray()
    for i in range(65536):
        sid, name = str(i + 1).encode(), b'f%d' % i
        e = struct.pack('>QIHHIIQII', 0, 0, len(sid), len(name), 0, 0, 0, 0, 16) + \
            struct.pack('>QQ', 0, 1 << 20) + sid + name
        tab += e + bytes(-len(e) % 8)
    with open(p, 'r+b') as f:
        end = (f.seek(0, 2) + 65535) & ~65535
        f.seek(end)
        f.write(tab)
        f.seek(60)
        f.write(struct.pack('>IQ', 65536, end))
    out = env.uq('snapshot', '-l', img)[1].splitlines()
    if len(out) != 65538 or not out[-1].startswith('65536 ') or ' f65535 ' not in out[-1]:
        raise Fail('listing 65536 snapshots: %d lines, last %r' % (len(out), out[-1:]))
    before = sha(p)
    rc, _, err = env.uq('snapshot', '-c', 'one-more', img, ok=(1,))
    if '65536' not in err or sha(p) != before:
        raise Fail('snapshot 65537: %r, file %s' % (err, 'unchanged' if sha(p) == before
                                                     else 'changed'))
    expect_content(env, img, Mirror(1 << 20), '65536 snapshots', 'f65535')


# ---- randomized workload ----

def random_workload(env, bits, seed, steps):
    rnd = random.Random(seed)
    cs = 4096
    img = 'rand%d.qcow2' % bits
    size = FAST_SIZE
    env.create(img, size, 'refcount_bits=%d,cluster_size=%d' % (bits, cs))
    m = Mirror(size)
    snaps = {}          # name -> mirror
    made = refused = 0
    for step in range(steps):
        r = rnd.random()
        n = len(m.b)
        what = None
        if r < 0.30:
            off, ln = rnd.randrange(n), rnd.randrange(1, 3 * cs)
            ln = min(ln, n - off)
            pat = rnd.randrange(1, 256)
            env.io(img, ['write -P %d %d %d' % (pat, off, ln)])
            m.fill(off, ln, pat)
            what = 'write %d+%d' % (off, ln)
        elif r < 0.38:
            off = rnd.randrange(n // cs) * cs
            pat = rnd.randrange(1, 256)
            env.io(img, ['write -c -P %d %d %d' % (pat, off, cs)])
            m.fill(off, cs, pat)
            what = 'compressed write %d' % off
        elif r < 0.46:
            off = rnd.randrange(n // cs) * cs
            ln = min(cs * rnd.randrange(1, 4), n - off)
            cmd = rnd.choice(['write -z', 'write -z -u', 'discard'])
            env.io(img, ['%s %d %d' % (cmd, off, ln)])
            m.fill(off, ln, 0)
            what = '%s %d+%d' % (cmd, off, ln)
        elif r < 0.62:
            name = 'r%d' % step
            before = sha(env.path(img))
            rc, out, err = env.uq('snapshot', '-c', name, img, ok=(0, 1))
            if rc:
                if 'refcount overflow' not in err or sha(env.path(img)) != before:
                    raise Fail('step %d: create refused (%s) and the file %s' % (
                        step, err.strip(), 'unchanged' if sha(env.path(img)) == before
                        else 'changed'))
                refused += 1
            else:
                snaps[name] = m.copy()
                made += 1
            what = 'create %s%s' % (name, ' (refused)' if rc else '')
        elif r < 0.76 and snaps:
            name = rnd.choice(sorted(snaps))
            before = sha(env.path(img))
            # qemu-img raises every count before lowering the old ones:
            # at narrow widths it overflows where uqcow doesn't
            by_qemu = rnd.random() < 0.2 and bits >= 8
            if by_qemu:
                rc, err = env.qimg('snapshot', '-a', name, img)[0], ''
            else:
                rc, out, err = env.uq('snapshot', '-a', name, img, ok=(0, 1))
            if rc:
                if 'refcount overflow' not in err or sha(env.path(img)) != before:
                    raise Fail('step %d: apply refused (%s)' % (step, err.strip()))
            else:
                m = snaps[name].copy()
            what = '%s apply %s' % ('qemu-img' if by_qemu else 'uqcow', name)
        elif r < 0.90 and snaps:
            name = rnd.choice(sorted(snaps))
            if rnd.random() < 0.2:
                env.qimg('snapshot', '-d', name, img)
                what = 'qemu-img delete ' + name
            else:
                env.uq('snapshot', '-d', name, img)
                what = 'delete ' + name
            del snaps[name]
        elif r < 0.95:
            # grow by whole clusters: a partial last cluster is another story
            ns = n + cs * rnd.randrange(1, 32)
            env.resize(img, ns)
            m.resize(ns)
            what = 'resize %d' % ns
        else:
            continue
        try:
            check_clean(env, img, 'step %d (%s)' % (step, what))
            expect_active_qemu(env, img, m, 'step %d (%s)' % (step, what))
            if step % 7 == 6:
                list_same(env, img, 'step %d' % step)
                for name in sorted(snaps):
                    expect_content(env, img, snaps[name], 'step %d' % step, name,
                                   rnd.choice(['uqcow', 'qemu']))
        except Fail as x:
            raise Fail('refcount_bits=%d seed %d: %s' % (bits, seed, x))
    for name in sorted(snaps):
        expect_content(env, img, snaps[name], 'end of the workload', name)
    env.notes.append('refcount_bits=%d: %d snapshots made, %d refused as overflowing, '
                     '%d kept' % (bits, made, refused, len(snaps)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--uqcow', default=os.environ.get('UQCOW'), help='uqcow binary')
    ap.add_argument('--quick', action='store_true', help='fewer random steps')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--steps', type=int, help='random steps per refcount width')
    ap.add_argument('--only', nargs='*', help='test names (prefixes)')
    ap.add_argument('-k', '--keep', action='store_true', help='keep the images')
    ap.add_argument('-v', '--verbose', action='store_true')
    a = ap.parse_args()
    exe, rc = interop_common.setup(a.uqcow, 'snapshot interop')
    if not exe:
        return rc
    os.environ.setdefault('TZ', 'UTC')      # both tools print local dates
    steps = a.steps or (25 if a.quick else 60)
    root = tempfile.mkdtemp(prefix='uqcow-snapshot-')
    tests = []
    for name, opts in VARIANTS:
        tests.append(('qemu-made.' + name, lambda e, n=name, o=opts: qemu_made(e, n, o)))
        tests.append(('uqcow-made.' + name, lambda e, n=name, o=opts: uqcow_made(e, n, o)))
    tests += [('disk-size', disk_size), ('refcount-bits-1', refcount_one),
              ('narrow-widths', narrow), ('extra-data', extra_data), ('id-wrap', id_wrap),
              ('limits', limits)]
    for bits in (2, 4, 8, 16, 32, 64):
        tests.append(('random.rb%d' % bits, lambda e, b=bits: random_workload(
            e, b, a.seed * 1000 + b, steps)))
    if a.only:
        tests = [t for t in tests if any(t[0].startswith(p) for p in a.only)]
    env = Env(exe, root, a.verbose)
    if not env.uq_write:
        print('note: uqcow io has no write command: writes go through qemu-io')
    failed = []
    t0 = time.monotonic()
    for name, fn in tests:
        env.d = os.path.join(root, name)
        os.makedirs(env.d)
        env.notes = []
        t1 = time.monotonic()
        try:
            fn(env)
            print('ok   %s (%.1fs)' % (name, time.monotonic() - t1))
        except Fail as x:
            failed.append(name)
            print('FAIL %s (%.1fs)\n    %s' % (name, time.monotonic() - t1,
                                               str(x).replace('\n', '\n    ')))
        except Exception as x:       # report, don't abort the other tests
            failed.append(name)
            print('FAIL %s: test error: %r' % (name, x))
        for n in env.notes:
            print('    note: ' + n)
        sys.stdout.flush()
    print('snapshot interop: %d passed, %d failed (%.0fs, seed %d)' % (
        len(tests) - len(failed), len(failed), time.monotonic() - t0, a.seed))
    if failed:
        print('snapshot interop: failed: ' + ' '.join(failed))
        print('snapshot interop: images kept in ' + root)
        return 1
    if not a.keep:
        shutil.rmtree(root)
    else:
        print('snapshot interop: images kept in ' + root)
    return 0


if __name__ == '__main__':
    sys.exit(main())
