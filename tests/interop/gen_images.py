#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Make qcow2 images with qemu-img/qemu-io and record what they must read as.

Usage: gen_images.py OUTDIR [--quick] [--seed N] [-j N] [--only NAME ...]

Every image gets a seeded random workload of `write -P`, `write -z [-u]` and
`discard` (unaligned, cluster-spanning, subcluster-sized).  The oracle is
qemu: the expected content is `qemu-img convert -O raw`, the expected map and
info are qemu-img's JSON, and every read check recorded here has been verified
with qemu-io.  OUTDIR/manifest.json lists one entry per image to test:
  name, image, raw (null if too big to convert), size,
  qemu_map, qemu_info, checks [[pattern, off, len]], bad [[pattern, off, len]]
"""
import argparse
import concurrent.futures
import json
import os
import random
import resource
import shutil
import re
import struct
import subprocess
import sys

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40


class GenError(Exception):
    pass


def _nocore():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run(args, cwd, ok=(0,)):
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                       preexec_fn=_nocore, timeout=600)
    if p.returncode not in ok:
        raise GenError('%s (in %s) -> %d: %s' % (' '.join(args), cwd, p.returncode,
                                                 p.stderr.strip() or p.stdout.strip()))
    return p


def qio(d, img, cmds, fmt='qcow2', ok=(0,), ro=False):
    for i in range(0, len(cmds), 100):
        args = ['qemu-io', '-f', fmt] + ['-r'] * ro
        for c in cmds[i:i + 100]:
            args += ['-c', c]
        run(args + [img], d, ok)


def create(d, img, size, opts='', backing=None, bfmt=None, fmt='qcow2'):
    args = ['qemu-img', 'create', '-q', '-f', fmt]
    if opts:
        args += ['-o', opts]
    if backing:
        args += ['-b', backing, '-F', bfmt]
    run(args + [img, str(size)], d)


def workload(rng, size, cluster, n, zero=0.0, unmap=0.0, discard=0.0, sub=None,
             lo=0, hi=None, maxlen=None):
    """Random qemu-io commands in [lo, hi); returns [(cmd, kind, off, len, pat)]."""
    hi = size if hi is None else hi
    maxlen = maxlen or min(max(4 * cluster, 64 * K), 512 * K)
    ops = []
    for i in range(n):
        shape = rng.choice(['cluster', 'sector', 'byte', 'span', 'span', 'sub'])
        if shape == 'cluster' and hi - lo > cluster:
            off = lo + rng.randrange(0, (hi - lo) // cluster) * cluster
            ln = cluster * rng.randint(1, max(1, min(4, maxlen // cluster)))
        elif shape == 'sector':
            off = lo + rng.randrange(0, (hi - lo) // 512) * 512
            ln = 512 * rng.randint(1, maxlen // 512)
        elif shape == 'span':      # start just before a cluster boundary
            b = lo + rng.randrange(1, max(2, (hi - lo) // cluster)) * cluster
            off = b - rng.randint(1, min(cluster, 8 * K))
            ln = (b - off) + rng.randint(1, min(maxlen, 2 * cluster + 1))
        elif shape == 'sub' and sub:
            off = lo + rng.randrange(0, (hi - lo) // sub) * sub
            ln = sub * rng.randint(1, 5)
        else:
            off = rng.randrange(lo, hi - 1)
            ln = rng.randint(1, maxlen)
        off = max(lo, min(off, hi - 1))
        ln = max(1, min(ln, hi - off))
        r = rng.random()
        if r < zero:
            ops.append(('write -z %d %d' % (off, ln), 'zero', off, ln, 0))
        elif r < zero + unmap:
            ops.append(('write -z -u %d %d' % (off, ln), 'zero', off, ln, 0))
        elif r < zero + unmap + discard:
            ops.append(('discard %d %d' % (off, ln), 'discard', off, ln, 0))
        else:
            p = rng.randrange(1, 256)
            ops.append(('write -P 0x%02x %d %d' % (p, off, ln), 'write', off, ln, p))
    # always touch the very end (partial last cluster for odd sizes)
    tail = min(hi - lo, rng.randint(1, 3 * 512 + 7))
    p = rng.randrange(1, 256)
    ops.append(('write -P 0x%02x %d %d' % (p, hi - tail, tail), 'write', hi - tail, tail, p))
    return ops


def apply(d, img, ops, fmt='qcow2'):
    qio(d, img, [o[0] for o in ops], fmt)
    return [o for o in ops if o[1] == 'write']


# ---------------------------------------------------------------- builders
# Each builder makes files in directory d and returns
# [(image relative to d, writes, convertible)] for the images to test.

def b_plain(d, rng, s):
    c = s['cluster']
    create(d, 'img.qcow2', s['size'], s['opts'])
    ops = workload(rng, s['size'], c, s['n'], sub=s.get('sub'), **s.get('mix', {}))
    if s.get('dirty'):   # lazy refcounts: crash after the flush, image left dirty
        qio(d, 'img.qcow2', [o[0] for o in ops] + ['flush', 'abort'], ok=(134, -6))
        with open(os.path.join(d, 'img.qcow2'), 'rb') as f:
            if not f.read(80)[79] & 1:
                raise GenError(s['name'] + ': dirty bit not set')
        return [('img.qcow2', [o for o in ops if o[1] == 'write'], True)]
    w = apply(d, 'img.qcow2', ops)
    return [('img.qcow2', w, True)]


def b_compressed(d, rng, s):
    """A raw source mixing zeros, patterns, text-like and random data, then
    `qemu-img convert -c`; a few overwrites afterwards."""
    size, c = s['size'], s['cluster']
    writes = []
    with open(os.path.join(d, 'src.raw'), 'wb') as f:
        f.truncate(size)
        off = 0
        while off < size:
            ln = min(size - off, rng.choice([c // 2, c, 2 * c, 3 * c + 777, 5000]))
            kind = rng.choice(['zero', 'pat', 'pat', 'text', 'rand', 'mixed'])
            f.seek(off)
            if kind == 'pat':
                p = rng.randrange(1, 256)
                f.write(bytes([p]) * ln)
                writes.append(('', 'write', off, ln, p))
            elif kind == 'text':
                word = bytes(rng.randrange(32, 127) for _ in range(rng.randint(3, 40)))
                f.write((word * (ln // len(word) + 1))[:ln])
            elif kind == 'rand':
                f.write(rng.randbytes(ln))
            elif kind == 'mixed':
                h = ln // 2
                p = rng.randrange(1, 256)
                f.write(bytes([p]) * h + rng.randbytes(ln - h))
                writes.append(('', 'write', off, h, p))
            off += ln
    run(['qemu-img', 'convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', s['opts'],
         'src.raw', 'img.qcow2'], d)
    os.unlink(os.path.join(d, 'src.raw'))
    if s['n']:
        writes += apply(d, 'img.qcow2', workload(rng, size, c, s['n'], zero=0.15,
                                                  discard=0.1, maxlen=c + 999))
    return [('img.qcow2', writes, True)]


def b_chain_short_top(d, rng, s):
    """raw base 32M <- mid 32M (v3) <- top 20M+1536: top smaller than base."""
    create(d, 'base.raw', 32 * M, fmt='raw')
    wb = apply(d, 'base.raw', workload(rng, 32 * M, 64 * K, s['n']), fmt='raw')
    create(d, 'mid.qcow2', 32 * M, 'cluster_size=64k', 'base.raw', 'raw')
    wm = apply(d, 'mid.qcow2', workload(rng, 32 * M, 64 * K, s['n'], zero=0.2, unmap=0.1,
                                        discard=0.1))
    top = 20 * M + 3 * 512
    create(d, 'top.qcow2', top, 'cluster_size=4k,refcount_bits=2', 'mid.qcow2', 'qcow2')
    wt = apply(d, 'top.qcow2', workload(rng, top, 4 * K, s['n'], zero=0.1, unmap=0.1,
                                        discard=0.1))
    return [('mid.qcow2', wb + wm, True), ('top.qcow2', wb + wm + wt, True)]


def b_chain_long_top(d, rng, s):
    """layers/base.qcow2 12M <- layers/mid.qcow2 20M (v2) <- top.qcow2 32M:
    the backing files are shorter than the image and read as zeros past
    their end; backing names are relative to each image's directory."""
    os.mkdir(os.path.join(d, 'layers'))
    create(d, 'layers/base.qcow2', 12 * M, 'cluster_size=4k,refcount_bits=8')
    wb = apply(d, 'layers/base.qcow2', workload(rng, 12 * M, 4 * K, s['n']))
    create(d, 'layers/mid.qcow2', 20 * M, 'compat=0.10,cluster_size=16k',
           'base.qcow2', 'qcow2')
    wm = apply(d, 'layers/mid.qcow2', workload(rng, 20 * M, 16 * K, s['n'], zero=0.2))
    create(d, 'top.qcow2', 32 * M, 'cluster_size=64k,refcount_bits=32',
           'layers/mid.qcow2', 'qcow2')
    wt = apply(d, 'top.qcow2', workload(rng, 32 * M, 64 * K, s['n'] // 2, zero=0.1,
                                        discard=0.1))
    return [('layers/mid.qcow2', wb + wm, True), ('top.qcow2', wb + wm + wt, True)]


def b_chain_xl2(d, rng, s):
    """Subclusters over a backing file: unallocated subclusters show the base."""
    create(d, 'base.qcow2', 16 * M, 'cluster_size=64k')
    wb = apply(d, 'base.qcow2', [('write -P 0x%02x %d %d' % (0x10 + i, i * M, M), 'write',
                                  i * M, M, 0x10 + i) for i in range(16)])
    create(d, 'top.qcow2', 16 * M, s['opts'], 'base.qcow2', 'qcow2')
    wt = apply(d, 'top.qcow2', workload(rng, 16 * M, s['cluster'], s['n'], sub=s['sub'],
                                        zero=0.15, unmap=0.05, discard=0.1,
                                        maxlen=s['cluster']))
    return [('top.qcow2', wb + wt, True)]


def b_snapshot(d, rng, s):
    c = s['cluster']
    create(d, 'img.qcow2', s['size'], s['opts'])
    w = []
    for i in range(s.get('snaps', 1)):
        w += apply(d, 'img.qcow2', workload(rng, s['size'], c, s['n'], zero=0.1,
                                            discard=0.1))
        run(['qemu-img', 'snapshot', '-c', 'snap%d' % i, 'img.qcow2'], d)
    w += apply(d, 'img.qcow2', workload(rng, s['size'], c, s['n'], zero=0.1, discard=0.1))
    return [('img.qcow2', w, True)]


def b_bitmap(d, rng, s):
    create(d, 'img.qcow2', s['size'], s['opts'])
    run(['qemu-img', 'bitmap', '--add', 'img.qcow2', 'b0'], d)
    w = apply(d, 'img.qcow2', workload(rng, s['size'], s['cluster'], s['n'], zero=0.1))
    run(['qemu-img', 'bitmap', '--add', '--disable', '-g', '512k', 'img.qcow2', 'b1'], d)
    w += apply(d, 'img.qcow2', workload(rng, s['size'], s['cluster'], s['n'] // 2))
    return [('img.qcow2', w, True)]


def b_hdrext(d, rng, s):
    """Append unknown header extensions (one with a length not a multiple of 8)."""
    r = b_plain(d, rng, s)
    path = os.path.join(d, 'img.qcow2')
    with open(path, 'r+b') as f:
        hdr = f.read(4096)
        version = struct.unpack('>I', hdr[4:8])[0]
        pos = 72 if version == 2 else struct.unpack('>I', hdr[100:104])[0]
        while True:
            typ, ln = struct.unpack('>II', hdr[pos:pos + 8])
            if typ == 0:
                break
            pos += 8 + (ln + 7) // 8 * 8
        new = b''
        for typ, data in ((0x0a5b1c2d, b'uqcow-unknown'), (0x7e57e57e, b'')):
            new += struct.pack('>II', typ, len(data)) + data + b'\0' * (-len(data) % 8)
        new += b'\0' * 8
        if hdr[pos:pos + len(new)].strip(b'\0') or pos + len(new) > 4096:
            raise GenError('no room for header extensions in ' + path)
        f.seek(pos)
        f.write(new)
    run(['qemu-img', 'check', 'img.qcow2'], d)
    return r


def b_huge(d, rng, s):
    """4 TiB, a few writes far apart (no raw conversion: checks by reads)."""
    size = s['size']
    z = 3 * T + 12345
    at = [(1000, 70000), (T - 1000, 3000), (2 * T + 2 * M, 512), (z, 3 * 65536),
          (size - 4096, 4096), (size // 2 - 77, 154)]
    ops = [('write -P 0x%02x %d %d' % (0x21 + i, o, n), 'write', o, n, 0x21 + i)
           for i, (o, n) in enumerate(at)]
    ops.append(('write -z %d 65536' % (z + 65536), 'zero', z + 65536, 65536, 0))
    create(d, 'img.qcow2', size, s['opts'])
    apply(d, 'img.qcow2', ops)
    # the zero write punched the middle of the fourth write
    w = [o for o in ops[:6] if o[2] != z] + [('', 'write', z, 65536, 0x24),
                                             ('', 'write', z + 2 * 65536, 65536, 0x24)]
    return [('img.qcow2', w, False)]


# ---------------------------------------------------------------- matrix

def hc(c):
    return '%dm' % (c >> 20) if c >= M else '%dk' % (c >> 10) if c >= K else str(c)


def matrix(quick):
    S = []

    def add(name, kind=b_plain, cluster=64 * K, size=16 * M, opts='', n=24, **kw):
        opts = ','.join(o for o in (opts, 'cluster_size=%d' % cluster) if o)
        S.append(dict(name=name, build=kind, cluster=cluster, size=size, n=n, opts=opts,
                      **kw))
    mix = dict(zero=0.1, unmap=0.05, discard=0.05)
    # every refcount width at least twice (v3), several cluster sizes
    for bits, c in ((1, 512), (1, 64 * K), (2, 4 * K), (2, 2 * M), (4, 512), (4, 64 * K),
                    (8, 4 * K), (8, 2 * M), (16, 512), (16, 64 * K), (32, 4 * K),
                    (32, 2 * M), (64, 512), (64, 64 * K), (64, 4 * K), (8, 128 * K),
                    (32, 1 * K)):
        size = {512: 4 * M + 3 * 512, 1 * K: 6 * M, 2 * M: 24 * M + 3 * 512}.get(c, 16 * M)
        add('rc%d_c%s_v3' % (bits, hc(c)), cluster=c, size=size,
            opts='refcount_bits=%d' % bits, mix=mix)
    # v2 (refcount_bits is always 16 there)
    for c in (512, 4 * K, 64 * K, 2 * M, 1 * M):
        add('v2_c%s' % hc(c), cluster=c, size=24 * M if c >= M else 8 * M + 512,
            opts='compat=0.10', mix=mix)
    # zero clusters and discard
    add('zero_v3_c64k', opts='refcount_bits=16', n=40, mix=dict(zero=0.3, unmap=0.2))
    add('zero_v3_c512_rc8', cluster=512, size=2 * M, opts='refcount_bits=8', n=40,
        mix=dict(zero=0.3, unmap=0.2))
    add('zero_v2_c64k', opts='compat=0.10', n=40, mix=dict(zero=0.3, unmap=0.2))
    add('discard_v3_c4k_rc1', cluster=4 * K, opts='refcount_bits=1', n=40,
        mix=dict(discard=0.4))
    add('discard_v2_c64k', opts='compat=0.10', n=40, mix=dict(discard=0.4))
    # extended L2 (subclusters)
    for c, bits in ((64 * K, 16), (2 * M, 4), (32 * K, 64)):
        add('xl2_c%s_rc%d' % (hc(c), bits), cluster=c, size=24 * M if c == 2 * M else 8 * M,
            opts='extended_l2=on,refcount_bits=%d' % bits, sub=c // 32, n=60,
            mix=dict(zero=0.2, unmap=0.05, discard=0.1))
    add('xl2_chain_c64k', kind=b_chain_xl2, opts='extended_l2=on', sub=2 * K, n=60)
    # compressed
    for name, c, opts in (('comp_zlib_c64k_v3', 64 * K, 'compression_type=zlib'),
                          ('comp_zstd_c64k_v3', 64 * K, 'compression_type=zstd'),
                          ('comp_zlib_c64k_v2', 64 * K, 'compat=0.10'),
                          ('comp_zstd_c4k_rc4', 4 * K, 'compression_type=zstd,refcount_bits=4'),
                          ('comp_zlib_c2m_rc64', 2 * M, 'compression_type=zlib,refcount_bits=64'),
                          ('comp_zstd_c512', 512, 'compression_type=zstd'),
                          ('comp_zstd_xl2_c64k', 64 * K, 'compression_type=zstd,extended_l2=on'),
                          ('comp_zlib_c1m_v2', M, 'compat=0.10')):
        add(name, kind=b_compressed, cluster=c, opts=opts,
            size=2 * M + 512 if c == 512 else (24 * M if c >= M else 8 * M),
            n=8)
    # preallocation
    add('prealloc_metadata_v3', opts='preallocation=metadata,refcount_bits=2', n=16)
    add('prealloc_falloc_c4k', cluster=4 * K, opts='preallocation=falloc', n=16)
    add('prealloc_metadata_v2_c2m', cluster=2 * M, size=24 * M,
        opts='compat=0.10,preallocation=metadata', n=16)
    add('prealloc_full_xl2', size=4 * M, opts='preallocation=full,extended_l2=on',
        sub=2 * K, n=16)
    # backing chains
    add('chain_short_top', kind=b_chain_short_top, n=20)
    add('chain_long_top', kind=b_chain_long_top, n=20)
    # external data file
    add('datafile_raw_on', opts='data_file=img.data,data_file_raw=on', n=30, mix=mix)
    add('datafile_raw_off_c4k', cluster=4 * K,
        opts='data_file=img.data,data_file_raw=off,refcount_bits=1', n=30, mix=mix)
    # internal snapshots, written after the snapshot
    add('snapshot_rc2', kind=b_snapshot, opts='refcount_bits=2', n=16)
    add('snapshot_v2_x2', kind=b_snapshot, cluster=4 * K, opts='compat=0.10', n=16, snaps=2)
    # lazy refcounts, clean and left dirty
    add('lazy_clean', opts='lazy_refcounts=on', n=20, mix=mix)
    add('lazy_dirty_rc8', opts='lazy_refcounts=on,refcount_bits=8', n=20, dirty=True)
    # sizes
    add('size_1g_3s', size=G + 3 * 512, n=30, mix=mix)
    add('size_odd_c4k', cluster=4 * K, size=7 * M + 3 * 512, n=30, mix=mix)
    add('size_4t', kind=b_huge, size=4 * T)
    # bitmaps and unknown header extensions
    add('bitmap_v3', kind=b_bitmap, n=16)
    add('hdrext_v3', kind=b_hdrext, n=12)
    add('hdrext_v2', kind=b_hdrext, opts='compat=0.10', n=12)
    if quick:
        keep = {'rc1_c512_v3', 'rc64_c64k_v3', 'v2_c4k', 'rc2_c2m_v3', 'zero_v3_c64k', 'xl2_c64k_rc16',
                'xl2_chain_c64k', 'comp_zstd_c64k_v3', 'comp_zlib_c64k_v2',
                'chain_long_top', 'datafile_raw_off_c4k', 'snapshot_rc2', 'size_4t',
                'hdrext_v3', 'prealloc_metadata_v3'}
        S = [s for s in S if s['name'] in keep]
        for s in S:
            s['n'] = min(s['n'], 12)
    return S


# ---------------------------------------------------------------- checks

def uniform_run(buf):
    """Longest run of one byte value in buf: (start, length, byte)."""
    best = max(((m.end() - m.start(), -m.start()) for m in re.finditer(rb'(.)\1*', buf, re.S)),
               default=(0, 0))
    return -best[1], best[0], buf[-best[1]] if best[0] else 0


def make_checks(rng, d, img, raw, writes, qmap, size):
    checks = []
    sample = rng.sample(writes, min(len(writes), 10))
    if raw:
        with open(raw, 'rb') as f:
            for w in sample:
                f.seek(w[2])
                s, n, b = uniform_run(f.read(min(w[3], 1 << 20)))
                if n:
                    checks.append([b, w[2] + s, n])
    else:
        checks = [[w[4], w[2], w[3]] for w in sample]
    zeros = [e for e in qmap if e['zero'] and not e['data']]
    for e in rng.sample(zeros, min(len(zeros), 3)):
        n = min(e['length'], rng.choice([512, 4096, 65536, 200000]))
        off = e['start'] + rng.randrange(0, e['length'] - n + 1)
        checks.append([0, off, n])
    cmd = ['read -P 0x%02x %d %d' % tuple(c) for c in checks]
    if cmd:
        qio(d, img, cmd, ro=True)       # the oracle agrees
    bad = []
    for c in rng.sample(checks, min(len(checks), 3)):
        b = [c[0] ^ rng.randrange(1, 256), c[1], c[2]]
        run(['qemu-io', '-r', '-f', 'qcow2', '-c', 'read -P 0x%02x %d %d' % tuple(b), img],
            d, ok=(1,))
        bad.append(b)
    return checks, bad


def build(outdir, s, seed):
    d = os.path.join(outdir, s['name'])
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    rng = random.Random('%s/%d' % (s['name'], seed))
    entries = []
    for img, writes, convertible in s['build'](d, rng, s):
        name = s['name'] if img in ('img.qcow2', 'top.qcow2') else \
            s['name'] + '.' + os.path.basename(img).split('.')[0]
        info = json.loads(run(['qemu-img', 'info', '--output=json', img], d).stdout)
        qmap = json.loads(run(['qemu-img', 'map', '--output=json', '-f', 'qcow2', img],
                              d).stdout)
        raw = None
        if convertible:
            raw = img + '.expected.raw'
            run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', img, raw], d)
        checks, bad = make_checks(rng, d, img, raw and os.path.join(d, raw), writes, qmap,
                                  info['virtual-size'])
        rel = os.path.relpath(d, outdir)
        entries.append(dict(name=name, image=os.path.join(rel, img),
                            raw=raw and os.path.join(rel, raw),
                            size=info['virtual-size'], qemu_info=info, qemu_map=qmap,
                            checks=checks, bad=bad))
    return entries


def generate(outdir, quick=False, seed=1, jobs=2, only=None, log=print):
    """Build all images into outdir; returns the manifest (list of entries)."""
    specs = [s for s in matrix(quick) if not only or s['name'] in only]
    os.makedirs(outdir, exist_ok=True)
    out = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        futs = {ex.submit(build, outdir, s, seed): s['name'] for s in specs}
        for f in concurrent.futures.as_completed(futs):
            out += f.result()
    out.sort(key=lambda e: e['name'])
    with open(os.path.join(outdir, 'manifest.json'), 'w') as f:
        json.dump(out, f, indent=1)
    log('gen: %d images from %d specs in %s' % (len(out), len(specs), outdir))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('outdir')
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('-j', '--jobs', type=int, default=2)
    ap.add_argument('--only', nargs='*')
    a = ap.parse_args()
    if not shutil.which('qemu-img') or not shutil.which('qemu-io'):
        print('gen_images: qemu-img/qemu-io not found', file=sys.stderr)
        return 77
    try:
        generate(a.outdir, a.quick, a.seed, a.jobs, a.only)
    except GenError as e:
        print('gen_images: ' + str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
