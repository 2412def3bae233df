#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Persistent dirty bitmaps interop: uqcow keeps QEMU's bitmaps and QEMU
keeps uqcow's.

Usage: test_bitmap.py --uqcow PATH [--only NAME ...] [-v] [-k]

The bits are read straight from the file by a small reader here (header
extension, bitmap directory, bitmap table, data clusters), itself checked
first against bitmaps QEMU dirtied with qemu-io. Bitmaps made by
`qemu-img bitmap --add` must survive uqcow writes, write-zeroes and
discards with exactly the written ranges, rounded out to the granularity,
set (and disabled ones untouched); QEMU must go on using them (it dirties
them further, merges and removes them); bitmaps `uqcow bitmap` adds must
work the same in QEMU; in-use (inconsistent) bitmaps stay in use; a dirty
lazy-refcounts image is rebuilt without leaking bitmap clusters; resize
keeps the bitmaps as qemu-img resize does. `qemu-img check` must be clean
after every step, and uqcow check must agree with it. Exit 0 all passed,
1 any failure, 77 no qemu-img.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import interop_common

MIB = 1 << 20
BITMAPS_EXT = 0x23852875


class Fail(Exception):
    pass


# ---- an independent reader of the on-disk bitmaps ----

def read_bitmaps(path):
    """{name: {'flags': int, 'gran': int, 'bits': set of set bit numbers}}
    from the file, or {} when the autoclear bit says there are none."""
    with open(path, 'rb') as f:
        data = f.read()
    version, = struct.unpack('>I', data[4:8])
    cluster_bits, = struct.unpack('>I', data[20:24])
    size, = struct.unpack('>Q', data[24:32])
    cs = 1 << cluster_bits
    if version < 3:
        return {}
    autoclear, = struct.unpack('>Q', data[88:96])
    hlen, = struct.unpack('>I', data[100:104])
    off, ext = hlen, None
    while off + 8 <= cs:
        t, n = struct.unpack('>II', data[off:off + 8])
        if t == 0:
            break
        if t == BITMAPS_EXT:
            ext = struct.unpack('>IIQQ', data[off + 8:off + 32])
        off += 8 + ((n + 7) & ~7)
    if ext is None or not autoclear & 1:
        return {}
    nb, _, dsize, doff = ext
    d = data[doff:doff + dsize]
    out, pos = {}, 0
    for _ in range(nb):
        toff, tsize, flags, typ, gbits, nlen, extra = struct.unpack('>QIIBBHI', d[pos:pos + 24])
        name = d[pos + 24 + extra:pos + 24 + extra + nlen].decode()
        pos += (24 + extra + nlen + 7) & ~7
        bits = set()
        nbits = (size + (1 << gbits) - 1) >> gbits
        for i in range(tsize):
            e, = struct.unpack('>Q', data[toff + 8 * i:toff + 8 * i + 8])
            doff_ = e & 0x00fffffffffffe00
            if doff_:
                chunk = data[doff_:doff_ + cs]
            elif e & 1:
                chunk = b'\xff' * cs
            else:
                continue
            for j, byte in enumerate(chunk):
                if byte:
                    for b in range(8):
                        bit = (i * cs + j) * 8 + b
                        if byte >> b & 1 and bit < nbits:
                            bits.add(bit)
        out[name] = {'flags': flags, 'gran': 1 << gbits, 'bits': bits}
    assert pos == dsize, 'directory size mismatch'
    return out


def expect_bits(ranges, gran):
    """Bits of [off, off+len) ranges rounded out to gran."""
    bits = set()
    for off, length in ranges:
        bits.update(range(off // gran, (off + length - 1) // gran + 1))
    return bits


# ---- running things ----

class Env:
    def __init__(self, exe, root, verbose):
        self.exe = exe
        self.root = root
        self.verbose = verbose

    def path(self, name):
        return os.path.join(self.root, name)

    def run(self, argv, ok=True):
        if self.verbose:
            print('  $ ' + ' '.join(argv))
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if ok and p.returncode != 0:
            raise Fail('%s exited %d:\n%s%s' % (' '.join(argv), p.returncode, p.stdout,
                                                  p.stderr))
        return p

    def uq(self, *args, ok=True):
        return self.run([self.exe] + list(args), ok=ok)

    def qimg(self, *args, ok=True):
        return self.run(['qemu-img'] + list(args), ok=ok)

    def qio(self, img, *cmds):
        argv = ['qemu-io', '-f', 'qcow2']
        for c in cmds:
            argv += ['-c', c]
        return self.run(argv + [img])

    def uio(self, img, *cmds):
        argv = ['io']
        for c in cmds:
            argv += ['-c', c]
        return self.uq(*(argv + [img]))

    def clean(self, img, what):
        """qemu-img check clean (no corruption, no leak) and uqcow check
        agreeing with it."""
        q = self.qimg('check', '--output=json', img, ok=False)
        r = json.loads(q.stdout) if q.stdout.strip() else {}
        if q.returncode != 0 or r.get('corruptions', 0) or r.get('leaks', 0) or \
                r.get('check-errors', 0):
            raise Fail('%s: qemu-img check not clean (exit %d): %s%s' %
                       (what, q.returncode, q.stdout, q.stderr))
        u = self.uq('check', '--output=json', img, ok=False)
        ur = json.loads(u.stdout) if u.stdout.strip() else {}
        if u.returncode != 0 or ur.get('image-end-offset') != r.get('image-end-offset'):
            raise Fail('%s: uqcow check disagrees with qemu-img (exit %d): %s%s' %
                       (what, u.returncode, u.stdout, u.stderr))

    def info_bitmaps(self, img):
        j = json.loads(self.qimg('info', '--output=json', img).stdout)
        bms = j['format-specific']['data'].get('bitmaps', [])
        return {b['name']: (sorted(b['flags']), b['granularity']) for b in bms}

    def create(self, name, size=64 * MIB, opts=None):
        img = self.path(name)
        argv = ['create', '-f', 'qcow2']
        if opts:
            argv += ['-o', opts]
        self.qimg(*(argv + [img, str(size)]))
        return img


def want(cond, msg):
    if not cond:
        raise Fail(msg)


def want_bits(env, img, name, expect, what):
    bms = read_bitmaps(img)
    want(name in bms, '%s: bitmap %s missing: %s' % (what, name, sorted(bms)))
    got = bms[name]['bits']
    if got != expect:
        raise Fail('%s: bitmap %s: bits %s, expected %s (extra %s, missing %s)' %
                   (what, name, sorted(got)[:20], sorted(expect)[:20],
                    sorted(got - expect)[:10], sorted(expect - got)[:10]))


# ---- cases ----

def case_reader(env):
    """The reader here decodes what QEMU itself dirtied, at two granularities."""
    img = env.create('reader.qcow2')
    env.qimg('bitmap', '--add', img, 'b64k')
    env.qimg('bitmap', '--add', '-g', '512', img, 'b512')
    ranges = [(MIB, 100 << 10), (40 * MIB, 512), (63 * MIB + 1000, 3000)]
    env.qio(img, *('write %d %d' % r for r in ranges))
    want_bits(env, img, 'b64k', expect_bits(ranges, 65536), 'qemu-io writes')
    want_bits(env, img, 'b512', expect_bits(ranges, 512), 'qemu-io writes')
    env.clean(img, 'after qemu-io')


def case_survive(env):
    """QEMU's bitmaps survive uqcow writes and mark exactly what uqcow wrote."""
    img = env.create('survive.qcow2')
    env.qimg('bitmap', '--add', img, 'b0')
    env.qimg('bitmap', '--add', '-g', '512', img, 'fine')
    env.qimg('bitmap', '--add', '-g', '1M', img, 'old')
    env.qio(img, 'write 8M 4k')
    env.qimg('bitmap', '--disable', img, 'old')
    before = {'b0': expect_bits([(8 * MIB, 4096)], 65536),
              'fine': expect_bits([(8 * MIB, 4096)], 512),
              'old': expect_bits([(8 * MIB, 4096)], MIB)}
    ranges = [(2 * MIB, 65536), (10 * MIB + 777, 1000), (20 * MIB, 131072),
              (30 * MIB, 65536), (63 * MIB + 65536 - 512, 512)]
    env.uio(img, 'write -P 3 %d %d' % ranges[0], 'write -P 4 %d %d' % ranges[1],
            'write -z %d %d' % ranges[2], 'discard %d %d' % ranges[3],
            'write -P 5 %d %d' % ranges[4])
    env.clean(img, 'after uqcow writes')
    info = env.info_bitmaps(img)
    want(info == {'b0': (['auto'], 65536), 'fine': (['auto'], 512), 'old': ([], MIB)},
         'qemu-img info after uqcow writes: %s' % info)
    want_bits(env, img, 'b0', before['b0'] | expect_bits(ranges, 65536), 'uqcow writes')
    want_bits(env, img, 'fine', before['fine'] | expect_bits(ranges, 512), 'uqcow writes')
    want_bits(env, img, 'old', before['old'], 'disabled bitmap after uqcow writes')
    # QEMU goes on with them: it loads them as consistent and dirties more
    env.qio(img, 'write 50M 512')
    want_bits(env, img, 'b0', before['b0'] | expect_bits(ranges + [(50 * MIB, 512)], 65536),
              'qemu-io after uqcow')
    env.qimg('bitmap', '--add', '--disable', img, 'copy')
    env.qimg('bitmap', '--merge', 'b0', img, 'copy')
    want_bits(env, img, 'copy', read_bitmaps(img)['b0']['bits'], 'qemu merge')
    env.clean(img, 'after qemu merge')
    # a read-only uqcow open changes nothing
    with open(img, 'rb') as f:
        raw = f.read()
    env.uq('io', '-r', '-c', 'read 0 64k', img)
    with open(img, 'rb') as f:
        want(f.read() == raw, 'a read-only uqcow open changed the file')


def case_uqcow_add(env):
    """Bitmaps uqcow adds read back in QEMU, and the verb's other actions."""
    img = env.create('add.qcow2')
    env.uq('bitmap', '--add', '-g', '128k', img, 'u0')
    env.uq('bitmap', '--add', '--disable', img, 'u1')
    env.clean(img, 'after uqcow bitmap --add')
    info = env.info_bitmaps(img)
    want(info == {'u0': (['auto'], 131072), 'u1': ([], 65536)}, 'info: %s' % info)
    u = json.loads(env.uq('info', '--output=json', img).stdout)
    want(u['format-specific']['data']['bitmaps'] ==
         json.loads(env.qimg('info', '--output=json', img).stdout)
         ['format-specific']['data']['bitmaps'], 'uqcow info --output=json differs')
    env.qio(img, 'write 3M 64k')
    want_bits(env, img, 'u0', expect_bits([(3 * MIB, 65536)], 131072), 'qemu on uqcow bitmap')
    env.uio(img, 'write 9M 64k')
    r = [(3 * MIB, 65536), (9 * MIB, 65536)]
    want_bits(env, img, 'u0', expect_bits(r, 131072), 'uqcow on uqcow bitmap')
    want_bits(env, img, 'u1', set(), 'disabled uqcow bitmap')
    env.qimg('bitmap', '--merge', 'u0', img, 'u1')
    # u0's 128k bits each cover two of u1's 64k bits
    wide = {b for b in range(1024) if (b * 65536) // 131072 in expect_bits(r, 131072)}
    want_bits(env, img, 'u1', wide, 'qemu merge of a uqcow bitmap')
    env.clean(img, 'after qemu merge')
    env.qimg('bitmap', '--remove', img, 'u1')
    env.clean(img, 'after qemu remove')
    # uqcow's own merge (different granularity), clear, enable/disable, remove
    env.uq('bitmap', '--add', '--disable', '-g', '64k', img, 'm')
    env.uq('bitmap', '--merge', 'u0', img, 'm')
    want_bits(env, img, 'm', wide, 'uqcow merge')
    env.uq('bitmap', '--clear', img, 'u0')
    want_bits(env, img, 'u0', set(), 'uqcow clear')
    env.uq('bitmap', '--disable', img, 'u0')
    env.uio(img, 'write 20M 4k')
    want_bits(env, img, 'u0', set(), 'disabled by uqcow')
    env.uq('bitmap', '--enable', img, 'u0')
    env.qio(img, 'write 21M 4k')
    want_bits(env, img, 'u0', expect_bits([(21 * MIB, 4096)], 131072), 'enabled by uqcow')
    want(env.info_bitmaps(img)['u0'] == (['auto'], 131072), 'u0 flags after enable')
    env.clean(img, 'after uqcow actions')
    # -b: merge from another file's bitmap
    other = env.create('other.qcow2')
    env.qimg('bitmap', '--add', other, 'src')
    env.qio(other, 'write 33M 64k')
    env.uq('bitmap', '--merge', 'src', '-b', other, '-F', 'qcow2', img, 'm')
    want(33 * MIB // 65536 in read_bitmaps(img)['m']['bits'], 'merge -b')
    for name in ('u0', 'm'):
        env.uq('bitmap', '--remove', img, name)
        env.clean(img, 'after uqcow remove ' + name)
    want(env.info_bitmaps(img) == {}, 'bitmaps left after removing all')
    with open(img, 'rb') as f:
        ac, = struct.unpack('>Q', f.read(96)[88:96])
    want(not ac & 1, 'autoclear bitmaps bit still set with no bitmaps')
    p = env.uq('bitmap', '--remove', img, 'nope', ok=False)
    want(p.returncode == 1 and "Operation remove on bitmap nope failed" in p.stderr,
         'remove of a missing bitmap: %r' % p.stderr)
    p = env.uq('bitmap', '--add', env.create('v2.qcow2', opts='compat=0.10'), 'x', ok=False)
    want(p.returncode == 1 and 'v3' in p.stderr, 'v2 add: %r' % p.stderr)


def case_in_use(env):
    """A bitmap QEMU left in use (killed) stays in use through uqcow writes;
    uqcow refuses to use it and removes it on request. With lazy refcounts
    the dirty image is rebuilt without leaking the bitmap's clusters."""
    img = env.create('inuse.qcow2', opts='lazy_refcounts=on')
    env.qimg('bitmap', '--add', img, 'b0')
    env.qimg('bitmap', '--add', img, 'ok')
    env.qio(img, 'write 1M 64k')
    env.qimg('bitmap', '--disable', img, 'ok')
    p = subprocess.run(['qemu-io', '-c', 'write 2M 64k', '-c', 'sigraise 9', img],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    want(p.returncode != 0, 'qemu-io was not killed')
    # qemu marks every bitmap it loads in use, disabled ones too
    inuse = {'b0': (['auto', 'in-use'], 65536), 'ok': (['in-use'], 65536)}
    want(env.info_bitmaps(img) == inuse, 'not in use: %s' % env.info_bitmaps(img))
    env.uio(img, 'write 5M 64k')      # rebuilds the dirty image's refcounts
    env.clean(img, 'after uqcow repaired a dirty image with bitmaps')
    info = env.info_bitmaps(img)
    want(info == inuse, 'after uqcow write: %s' % info)
    p = env.uq('bitmap', '--clear', img, 'b0', ok=False)
    want(p.returncode == 1 and 'inconsistent' in p.stderr, 'clear in-use: %r' % p.stderr)
    env.uq('bitmap', '--remove', img, 'b0')
    env.clean(img, 'after removing an in-use bitmap')


def case_resize(env):
    """Resize keeps the bitmaps, sized to the new disk, as qemu-img does."""
    img = env.create('resize.qcow2')
    env.qimg('bitmap', '--add', img, 'b0')
    env.qimg('bitmap', '--add', '-g', '512', img, 'fine')
    env.uio(img, 'write 1M 4k', 'write 60M 4k')
    env.uq('resize', img, '128M')
    env.clean(img, 'after grow')
    r = [(MIB, 4096), (60 * MIB, 4096)]
    want_bits(env, img, 'b0', expect_bits(r, 65536), 'after grow')
    env.qio(img, 'write 100M 4k')
    want_bits(env, img, 'b0', expect_bits(r + [(100 * MIB, 4096)], 65536), 'qemu after grow')
    env.uio(img, 'discard 32M 96M')
    env.uq('resize', '--shrink', img, '32M')
    env.clean(img, 'after shrink')
    want_bits(env, img, 'b0', expect_bits([(MIB, 4096)], 65536), 'after shrink')
    want_bits(env, img, 'fine', expect_bits([(MIB, 4096)], 512), 'after shrink')
    want(env.info_bitmaps(img) == {'b0': (['auto'], 65536), 'fine': (['auto'], 512)},
         'flags after shrink: %s' % env.info_bitmaps(img))
    env.qio(img, 'write 31M 4k')
    env.clean(img, 'qemu after shrink')


def case_snapshot(env):
    """Snapshot apply is refused while the image has bitmaps, as qemu-img
    7.2 refuses it (disabled ones too); create is fine."""
    img = env.create('snap.qcow2')
    env.uio(img, 'write 1M 64k')
    env.uq('snapshot', '-c', 's1', img)
    env.qimg('bitmap', '--add', '--disable', img, 'b0')
    env.uq('snapshot', '-c', 's2', img)
    q = env.qimg('snapshot', '-a', 's1', img, ok=False)
    p = env.uq('snapshot', '-a', 's1', img, ok=False)
    want(q.returncode == 1 and p.returncode == 1 and
         'Device has active dirty bitmaps' in q.stderr and
         'Device has active dirty bitmaps' in p.stderr,
         'snapshot apply with bitmaps: qemu %r, uqcow %r' % (q.stderr, p.stderr))
    env.clean(img, 'after refused apply')


def set_refcount(img, host_off, value):
    """16-bit refcounts: the entry of host_off's cluster in the first block."""
    with open(img, 'r+b') as f:
        d = f.read(1 << 20)
        cs = 1 << struct.unpack('>I', d[20:24])[0]
        rt, = struct.unpack('>Q', d[48:56])
        f.seek(rt)
        rb, = struct.unpack('>Q', f.read(8))
        f.seek(rb + 2 * (host_off // cs))
        f.write(struct.pack('>H', value))


def bitmap_clusters(img):
    """(directory, table, first data cluster) offsets of the first bitmap."""
    with open(img, 'rb') as f:
        d = f.read()
    off = struct.unpack('>I', d[100:104])[0]
    while True:
        t, n = struct.unpack('>II', d[off:off + 8])
        if t == BITMAPS_EXT:
            doff, = struct.unpack('>Q', d[off + 24:off + 32])
            break
        off += 8 + ((n + 7) & ~7)
    toff, = struct.unpack('>Q', d[doff:doff + 8])
    data, = struct.unpack('>Q', d[toff:toff + 8])
    return doff, toff, data & 0x00fffffffffffe00


def case_check(env):
    """uqcow check counts bitmap clusters as qemu-img check does: the same
    lines for refcounts too low and too high on the directory, a table and
    bitmap data; -r all leaves an image qemu-img finds clean, bitmaps kept."""
    base = env.create('check.qcow2')
    env.qimg('bitmap', '--add', base, 'b0')
    env.qio(base, 'write 0 64k', 'write 5M 4k')
    bits = read_bitmaps(base)['b0']['bits']
    for i, host in enumerate(bitmap_clusters(base)):
        for value in (0, 2):
            img = env.path('check-%d-%d.qcow2' % (i, value))
            shutil.copy(base, img)
            set_refcount(img, host, value)
            q = env.qimg('check', img, ok=False)
            u = env.uq('check', img, ok=False)
            want(q.returncode == u.returncode and q.stdout == u.stdout,
                 'check of refcount %d at 0x%x: qemu (exit %d)\n%s\nuqcow (exit %d)\n%s%s'
                 % (value, host, q.returncode, q.stdout, u.returncode, u.stdout, u.stderr))
            env.uq('check', '-r', 'all', img, ok=False)
            env.clean(img, 'after uqcow check -r all (refcount %d at 0x%x)' % (value, host))
            want_bits(env, img, 'b0', bits, 'after repair')
            want(env.info_bitmaps(img) == {'b0': (['auto'], 65536)}, 'bitmap after repair')


def case_small_cluster(env):
    """512-byte clusters: uqcow's feature name table leaves no room for the
    bitmaps extension, so it goes (qemu writes none there either)."""
    img = env.path('c512.qcow2')
    env.uq('create', '-f', 'qcow2', '-o', 'cluster_size=512', img, '4M')
    env.uq('bitmap', '--add', '-g', '4k', img, 'b')
    env.uio(img, 'write 8k 4k')
    env.clean(img, 'after add at 512-byte clusters')
    want(env.info_bitmaps(img) == {'b': (['auto'], 4096)}, 'info: %s' % env.info_bitmaps(img))
    want_bits(env, img, 'b', {2}, '512-byte clusters')
    env.qio(img, 'write 1M 512')
    want_bits(env, img, 'b', {2, 256}, 'qemu at 512-byte clusters')


CASES = [('reader', case_reader), ('survive', case_survive), ('uqcow_add', case_uqcow_add),
         ('in_use', case_in_use), ('resize', case_resize), ('snapshot', case_snapshot),
         ('check', case_check), ('small_cluster', case_small_cluster)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--uqcow', default=os.environ.get('UQCOW'))
    ap.add_argument('--only', nargs='*')
    ap.add_argument('-v', action='store_true')
    ap.add_argument('-k', action='store_true', help='keep the temp dir')
    a = ap.parse_args()
    exe, status = interop_common.setup(a.uqcow, 'test_bitmap')
    if exe is None:
        return status
    root = tempfile.mkdtemp(prefix='uqcow-bitmap-')
    failed = 0
    for name, fn in CASES:
        if a.only and name not in a.only:
            continue
        try:
            fn(Env(exe, root, a.v))
            print('ok   %s' % name)
        except Fail as e:
            failed += 1
            print('FAIL %s: %s' % (name, e))
    if failed or a.k:
        print('images kept in %s' % root)
    else:
        shutil.rmtree(root)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
