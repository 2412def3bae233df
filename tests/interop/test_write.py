#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write-path interop: images uqcow writes must satisfy qemu-img.

Usage: test_write.py --uqcow PATH [--quick] [--only SECTION ...] [--seed N] [-j N] [-k] [-v]

Sections (all by default):
  create   uqcow create against qemu-img create: the Formatting line, info,
           check, contents and allocation, for every option and error case;
  io       the same command list through qemu-io and `uqcow io` on images
           made alike (every refcount width, cluster sizes 512/64k/2M, v2/v3,
           extended_l2, lazy_refcounts, data_file, qcow2 and raw backing):
           same report lines, `qemu-img check` clean, `qemu-img compare` equal;
  convert  uqcow convert -O qcow2 (-o options, -c) of qemu-made images:
           check clean, compare equal to the source, same allocation as
           qemu-img convert, compressed clusters with -c;
  amend    refcount_bits from every width to every width: check, compare;
  resize   grow, shrink and relative sizes against qemu-img resize.
Exit 0 all passed, 1 any failure, 77 qemu-img/qemu-io missing.
"""
import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

import interop_common

MiB = 1 << 20
SIZE = 16 * MiB
WIDTHS = [1, 2, 4, 8, 16, 32, 64]
STATS = re.compile(r'^[\d.]+ (bytes|[KMGTPE]iB), \d+ ops; .*sec and [\d.]+ ops/sec\)$')
PARSABLE = re.compile(r'^(\d+),(\d+),\d+:\d\d:\d\d\.\d\d,[\d.]+,[\d.]+$')
EXE = None
WRAP = []

# Cases that fail because of engine bugs already reported: they print
# XFAIL and don't fail the run; XPASS says one can go from this list.
KNOWN = {}


class Result:
    def __init__(self, name):
        self.name, self.fails, self.notes, self.secs = name, [], [], 0.0

    def fail(self, msg):
        self.fails.append(msg)

    def note(self, msg):
        self.notes.append(msg)


def run(args, cwd, timeout=900):
    try:
        p = subprocess.run(args, cwd=cwd, capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode(errors='replace'), \
            p.stderr.decode(errors='replace').strip()
    except subprocess.TimeoutExpired:
        return 'timeout', '', 'timed out after %ds' % timeout


def uq(args, cwd, timeout=900):
    return run(WRAP + [EXE] + args, cwd, timeout)


def show(args, d):
    return 'cd %s && %s' % (d, ' '.join(a if a and ' ' not in a and ',' not in a
                                         else repr(a) for a in args))


def line1(s):
    return (s.splitlines() or [''])[0]


def qemu_check(path, d):
    """None if `qemu-img check` finds the image clean, else why."""
    rc, out, err = run(['qemu-img', 'check', '--output=json', path], d)
    try:
        j = json.loads(out)
    except ValueError:
        return 'qemu-img check exit %s: %s %s' % (rc, line1(out), line1(err))
    bad = {k: j.get(k, 0) for k in ('corruptions', 'leaks', 'check-errors')
           if j.get(k, 0)}
    if rc != 0 or bad:
        return 'qemu-img check exit %s: %s' % (rc, bad or line1(err))
    return None


def qemu_compare(a, b, d):
    rc, out, err = run(['qemu-img', 'compare', a, b], d)
    return None if rc == 0 else 'qemu-img compare %s %s: exit %s: %s' % (
        a, b, rc, line1(out) or line1(err))


def qemu_map(path, d):
    rc, out, err = run(['qemu-img', 'map', '--output=json', path], d)
    if rc != 0:
        raise RuntimeError('qemu-img map %s: %s' % (path, line1(err)))
    return json.loads(out)


def map_diff(a, b, d, keys=('present', 'zero', 'data')):
    """First range where the two images' qemu-img map flags differ."""
    ma, mb = qemu_map(a, d), qemu_map(b, d)
    i = j = 0
    pos = 0
    while i < len(ma) and j < len(mb):
        x, y = ma[i], mb[j]
        end = min(x['start'] + x['length'], y['start'] + y['length'])
        fx, fy = [x.get(k) for k in keys], [y.get(k) for k in keys]
        if fx != fy:
            return '[%d, %d): %s %s vs %s %s' % (pos, end, a, dict(zip(keys, fx)), b,
                                                 dict(zip(keys, fy)))
        pos = end
        i += x['start'] + x['length'] == end
        j += y['start'] + y['length'] == end
    return None


def qemu_info(path, d):
    rc, out, err = run(['qemu-img', 'info', '--output=json', path], d)
    if rc != 0:
        raise RuntimeError('qemu-img info %s: %s' % (path, line1(err)))
    return json.loads(out)


def compressed_count(path, d):
    rc, out, err = run(['qemu-img', 'check', '--output=json', path], d)
    return json.loads(out).get('compressed-clusters', 0)


def normalize(out):
    """qemu-io report lines without the timings; error lines dropped."""
    lines = []
    for ln in out.splitlines():
        if STATS.match(ln):
            lines.append(re.sub(r';.*', '; TIME', ln))
        elif PARSABLE.match(ln):
            lines.append(PARSABLE.sub(r'\1,\2,TIME', ln))
        elif re.match(r'^(wrote|read|discard) \d+/\d+ bytes at offset \d+$', ln):
            lines.append(ln)
    return lines


# ---- create ----

CREATE_OPTS = [
    '', 'compat=0.10', 'compat=v2', 'compat=1.1', 'cluster_size=512', 'cluster_size=2M',
    'cluster_size=4k,refcount_bits=1', 'extended_l2=on', 'extended_l2=on,cluster_size=2M',
    'lazy_refcounts=on', 'compression_type=zstd', 'preallocation=metadata',
    'preallocation=falloc', 'preallocation=full', 'data_file=DATA',
    'data_file=DATA,data_file_raw=on',
] + ['refcount_bits=%d' % w for w in WIDTHS] + [
    'cluster_size=512,refcount_bits=1,preallocation=metadata',
    'cluster_size=2M,extended_l2=on,refcount_bits=64',
]
CREATE_BAD = [
    'foo=1', 'refcount_bits=3', 'refcount_bits=128', 'refcount_bits=0', 'cluster_size=1000',
    'cluster_size=4M', 'cluster_size=256', 'compat=0.9', 'lazy_refcounts=maybe',
    'compression_type=lz4', 'preallocation=xx', 'compat=0.10,refcount_bits=1',
    'compat=0.10,lazy_refcounts=on', 'extended_l2=on,cluster_size=4k',
    'data_file_raw=on', 'size=abc',
]
INFO_KEYS = ['virtual-size', 'cluster-size', 'format', 'backing-filename',
             'backing-filename-format', 'format-specific']


def create_case(root, opts, size, extra=()):
    r = Result('create %s %s %s' % (opts or '-', size, ' '.join(extra)))
    d = tempfile.mkdtemp(dir=os.path.join(root, 'create'))
    if '-b' in extra:
        shutil.copy(os.path.join(root, 'create', 'base.qcow2'), d)
    o = [] if not opts else ['-o', opts.replace('DATA', 'u.data')]
    qo = [] if not opts else ['-o', opts.replace('DATA', 'q.data')]
    a = ['create', '-f', 'qcow2'] + o + list(extra) + ['u.qcow2', size]
    rc, out, err = uq(a, d)
    qrc, qout, qerr = run(['qemu-img', 'create', '-f', 'qcow2'] + qo + list(extra) +
                          ['q.qcow2', size], d)
    if rc != 0 or qrc != 0:
        r.fail('exit %s (qemu-img %s): %s  [%s]' % (rc, qrc, err or qerr, show(a, d)))
        return r
    if out.replace('u.qcow2', 'q.qcow2').replace('u.data', 'q.data') != qout:
        r.fail('Formatting line differs:\n      uqcow: %s\n      qemu:  %s' %
               (out.strip(), qout.strip()))
    if '-u' in extra:      # the backing file is missing: qemu can't open it
        shutil.rmtree(d)
        return r
    why = qemu_check('u.qcow2', d)
    if why:
        r.fail(why + '  [%s]' % show(a, d))
    ui, qi = qemu_info('u.qcow2', d), qemu_info('q.qcow2', d)
    for k in INFO_KEYS:
        uv, qv = ui.get(k), qi.get(k)
        if k == 'format-specific' and uv and qv:
            uv, qv = dict(uv['data']), dict(qv['data'])
            for x in (uv, qv):
                x.pop('data-file', None)
        if uv != qv:
            r.fail('info %s: uqcow %r, qemu %r' % (k, uv, qv))
    why = qemu_compare('u.qcow2', 'q.qcow2', d)
    if why:
        r.fail(why)
    diff = map_diff('u.qcow2', 'q.qcow2', d, ('present', 'data'))
    if diff:
        r.note('allocation differs from qemu-img create: ' + diff)
    if not r.fails:
        shutil.rmtree(d)
    return r


def create_bad_case(d, opts):
    r = Result('create bad %s' % opts)
    a = ['create', '-f', 'qcow2', '-o', opts, 'bad.qcow2', '1M']
    rc, out, err = uq(a, d)
    qrc, _, _ = run(['qemu-img', 'create', '-f', 'qcow2', '-o', opts, 'qbad.qcow2', '1M'], d)
    if rc != 1 or qrc != 1:
        r.fail('exit %s (qemu-img %s), want 1  [%s]' % (rc, qrc, show(a, d)))
    elif len(err.splitlines()) != 1 or not err.startswith('uqcow: '):
        r.fail('want one "uqcow: " error line, got %r' % err)
    return r


def create_cases(root, quick):
    d = os.path.join(root, 'create')
    os.makedirs(d)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', '64M'], d)
    sizes = ['1M'] if quick else ['1M', '1000', '3G']
    cases = [(root, o, s) for o in (CREATE_OPTS[:6] if quick else CREATE_OPTS)
             for s in sizes if not ('prealloc' in o and s == '3G')]
    cases += [(root, '', '16M', ('-b', 'base.qcow2', '-F', 'qcow2')),
              (root, 'compat=0.10', '16M', ('-b', 'base.qcow2', '-F', 'qcow2')),
              (root, 'extended_l2=on', '128M', ('-b', 'base.qcow2', '-F', 'qcow2')),
              (root, '', '16M', ('-u', '-b', 'missing.qcow2', '-F', 'qcow2'))]
    return cases


def create_misc(root):
    d = os.path.join(root, 'create')
    results = []
    # the size comes from the backing file when not given
    r = Result('create -b without SIZE')
    rc, out, err = uq(['create', '-b', 'base.qcow2', '-F', 'qcow2', 'u.qcow2'], d)
    if rc != 0 or qemu_info('u.qcow2', d)['virtual-size'] != 64 * MiB:
        r.fail('exit %s: %s' % (rc, err))
    results.append(r)
    for o in CREATE_BAD:
        results.append(create_bad_case(d, o))
    for args in (['-b', 'base.qcow2', 'x.qcow2', '1M'], ['-F', 'raw', 'x.qcow2', '1M'],
                 ['-b', 'missing', '-F', 'raw', 'x.qcow2', '1M'], ['x.qcow2'],
                 ['-o', 'size=1M', 'x.qcow2', '1M'], ['x.qcow2', '1Q'],
                 ['-f', 'raw', '-b', 'base.qcow2', '-F', 'qcow2', 'x.raw', '1M'],
                 ['-f', 'vmdk', 'x.vmdk', '1M']):
        r = Result('create bad ' + ' '.join(args))
        rc, _, err = uq(['create'] + args, d)
        if rc != 1 or len(err.splitlines()) != 1:
            r.fail('exit %s, want 1 with one error line: %r' % (rc, err))
        results.append(r)
    r = Result('create -f raw')
    rc, out, err = uq(['create', '-f', 'raw', 'u.raw', '1000'], d)
    st = os.stat(os.path.join(d, 'u.raw'))
    if rc or out != "Formatting 'u.raw', fmt=raw size=1000\n" or st.st_size != 1024 or \
            st.st_blocks:
        r.fail('exit %s, %r, size %d, blocks %d' % (rc, out, st.st_size, st.st_blocks))
    results.append(r)
    r = Result('create -o help')
    rc, out, _ = uq(['create', '-o', 'help'], d)
    if rc or 'refcount_bits=<num>' not in out:
        r.fail('exit %s: %r' % (rc, out[:200]))
    results.append(r)
    return results


# ---- io ----

IO_CONFIGS = (
    [('rb%d' % w, 'refcount_bits=%d' % w, None) for w in WIDTHS] +
    [('rb%d-c512' % w, 'refcount_bits=%d,cluster_size=512' % w, None) for w in (1, 16, 64)] +
    [('rb%d-c2M' % w, 'refcount_bits=%d,cluster_size=2M' % w, None) for w in (1, 16, 64)] +
    [('v2', 'compat=0.10', None), ('v2-c512', 'compat=0.10,cluster_size=512', None),
     ('v2-c2M', 'compat=0.10,cluster_size=2M', None),
     ('extl2', 'extended_l2=on', None), ('extl2-c2M', 'extended_l2=on,cluster_size=2M', None),
     ('extl2-rb1', 'extended_l2=on,refcount_bits=1', None),
     ('lazy', 'lazy_refcounts=on', None), ('lazy-rb2', 'lazy_refcounts=on,refcount_bits=2', None),
     ('zstd', 'compression_type=zstd', None),
     ('datafile', 'data_file=DATA', None),
     ('prealloc-meta', 'preallocation=metadata', None),
     ('back', '', 'qcow2'), ('back-raw', '', 'raw'), ('back-v2', 'compat=0.10', 'qcow2'),
     ('back-extl2', 'extended_l2=on', 'qcow2'), ('back-c512', 'cluster_size=512', 'qcow2'),
     ('back-c2M-rb1', 'cluster_size=2M,refcount_bits=1', 'qcow2'),
     ('back-lazy', 'lazy_refcounts=on', 'qcow2')])


def opt_value(opts, key, default):
    for kv in opts.split(','):
        if kv.startswith(key + '='):
            return kv.split('=', 1)[1]
    return default


def parse_size(s):
    m = re.match(r'^(\d+)([kKMG]?)$', s)
    return int(m.group(1)) << {'': 0, 'k': 10, 'K': 10, 'M': 20, 'G': 30}[m.group(2)]


def io_ops(cs, rng, n, compress, backing):
    """A fixed list exercising every command, then n random ones. qemu only
    writes compressed clusters that were never allocated (else EIO), so
    those go to clusters no earlier command touched."""
    touched = set()

    def touch(off, ln):
        touched.update(range(off // cs, (off + ln - 1) // cs + 1))

    def add(op):
        ops.append(op)
        w = op.split()
        touch(int(w[-2]), int(w[-1]))

    ops = []
    for op in ['write 0 4096', 'write -P 0x11 %d %d' % (cs - 512, 1024),
               'write -P 0x22 %d %d' % (MiB, 300 << 10), 'write -z %d 65536' % MiB,
               'write -z -u %d %d' % (2 * MiB, cs), 'discard %d %d' % (MiB, cs),
               'write -P 0x33 -q %d 1024' % (5 * MiB), 'write -P 7 -C %d 512' % (6 * MiB),
               'discard -q %d %d' % (8 * MiB, 2 * cs), 'write -z -u -q 0 %d' % (cs // 2)]:
        add(op)
    ops.insert(6, 'flush')
    if backing:
        for op in ['write -P 0x55 %d 512' % (10 * MiB + 100), 'write -z %d 4096' % (11 * MiB),
                   'discard %d %d' % (12 * MiB, 2 * cs), 'write -z -u %d %d' % (13 * MiB, cs)]:
            add(op)
    if compress:
        free = [c for c in range(SIZE // cs - 1, -1, -1) if c not in touched][:2]
        if len(free) == 2:
            add('write -c -P 0x44 %d %d' % (free[0] * cs, cs))
            add('write -c %d %d' % (free[1] * cs, cs))
            ops.append('write -P 0x45 %d %d' % (free[0] * cs + cs // 4, cs // 2))
    for _ in range(n):
        k = rng.random()
        if rng.random() < 0.5:
            off = rng.randrange(0, SIZE // cs) * cs + rng.choice([0, 512, cs // 2])
        else:
            off = rng.randrange(0, SIZE - 1)
        ln = rng.choice([1, 512, 4096, cs, 2 * cs + 512, rng.randrange(1, 3 * cs),
                         rng.randrange(1, 256 * 1024)])
        ln = max(1, min(ln, SIZE - off))
        if k < 0.5:
            add('write -P 0x%02x %d %d' % (rng.randrange(1, 256), off, ln))
        elif k < 0.65:
            add('write -z %s%d %d' % (rng.choice(['', '-u ']), off, ln))
        elif k < 0.8:
            add('discard %d %d' % (off, ln))
        elif k < 0.9 and compress:
            c = rng.randrange(0, SIZE // cs)
            if c not in touched:
                add('write -c -P 0x%02x %d %d' % (rng.randrange(256), c * cs, cs))
        elif k < 0.95:
            ops.append('flush')
        else:
            add('write %d %d' % (off, ln))
    return ops


def make_base(d, kind):
    if kind == 'qcow2':
        name = 'base.qcow2'
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', name, str(SIZE)], d)
    else:
        name = 'base.raw'
        run(['qemu-img', 'create', '-q', '-f', 'raw', name, str(SIZE)], d)
    run(['qemu-io', '-f', kind, '-c', 'write -P 0xb1 0 16M', '-c', 'write -z 4M 1M',
         name], d)
    return name


def raw_model_ops(ops, cs, v2_backing):
    """The same commands for a raw copy, as qcow2 defines their contents:
    compressed writes are plain writes; a discard zeroes the whole clusters
    it covers (qemu leaves partial ones alone, and on v2 with a backing
    file, where zeros can't be recorded, does nothing)."""
    out = []
    for op in ops:
        w = op.split()
        if w[0] == 'write':
            out.append(' '.join(x for x in w if x not in ('-c', '-u')))
        elif w[0] == 'discard' and not v2_backing:
            off, ln = int(w[-2]), int(w[-1])
            start, end = -(-off // cs) * cs, (off + ln) // cs * cs
            if off + ln == SIZE:
                end = SIZE
            if start < end:
                out.append('write -z -q %d %d' % (start, end - start))
        elif w[0] == 'flush':
            out.append(op)
    return out


def io_dir(root, name, opts, backing):
    """The case's folder with its raw model (the backing file's contents,
    or zeros): (folder, cluster size, the -b/-F arguments)."""
    d = os.path.join(root, 'io', name)
    os.makedirs(d)
    cs = parse_size(opt_value(opts, 'cluster_size', '65536'))
    extra = []
    if backing:
        extra = ['-b', make_base(d, backing), '-F', backing]
        run(['qemu-img', 'convert', '-f', backing, '-O', 'raw', extra[1], 'model.raw'], d)
    else:
        run(['qemu-img', 'create', '-q', '-f', 'raw', 'model.raw', str(SIZE)], d)
    return d, cs, extra


def io_case(root, name, opts, backing, seed, nops):
    """One command list through qemu-io and uqcow io. Oracles: qemu's
    image (when qemu didn't corrupt it) and a raw copy the same commands
    were applied to, as their qcow2 meaning."""
    r = Result('io ' + name)
    d, cs, extra = io_dir(root, name, opts, backing)
    uo = ['-o', opts.replace('DATA', 'u.data')] if opts else []
    qo = ['-o', opts.replace('DATA', 'q.data')] if opts else []
    a = ['create', '-q', '-f', 'qcow2'] + uo + extra + ['u.qcow2', str(SIZE)]
    rc, _, err = uq(a, d)
    if rc != 0:
        r.fail('create: exit %s: %s  [%s]' % (rc, err, show(a, d)))
        return r
    run(['qemu-img', 'create', '-q', '-f', 'qcow2'] + qo + extra + ['q.qcow2', str(SIZE)], d)
    rng = random.Random('%s-%d' % (name, seed))
    # qemu refuses compressed writes to data files and allocated clusters
    ops = io_ops(cs, rng, nops, 'data_file' not in opts and 'prealloc' not in opts,
                 backing)
    qa, ua, ma = ['qemu-io'], ['io'], ['qemu-io', '-f', 'raw']
    for op in ops:
        qa += ['-c', op]
        ua += ['-c', op]
    for op in raw_model_ops(ops, cs, backing and 'compat=0.10' in opts):
        ma += ['-c', op]
    qrc, qout, qerr = run(qa + ['q.qcow2'], d)
    rc, out, err = uq(ua + ['u.qcow2'], d)
    mrc, _, merr = run(ma + ['model.raw'], d)
    if mrc != 0:
        r.fail('qemu-io on the raw model: exit %s: %s' % (mrc, line1(merr)))
    if rc != 0:
        r.fail('io: exit %s: %s  [%s]' % (rc, line1(err), show([EXE] + ua + ['u.qcow2'], d)))
    why = qemu_check('u.qcow2', d)
    if why:
        r.fail(why + '  [%s]' % show([EXE] + ua + ['u.qcow2'], d))
    rc, out2, err2 = run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', 'u.qcow2',
                          'model.raw'], d)
    if rc != 0:
        r.fail('contents differ from the raw model: %s  [%s]' %
               (line1(out2) or line1(err2), show([EXE] + ua + ['u.qcow2'], d)))
    # and through uqcow's own read path
    rc, out2, err2 = uq(['compare', 'u.qcow2', 'model.raw'], d)
    if rc != 0:
        r.fail('uqcow compare with the raw model: exit %s: %s' %
               (rc, line1(out2) or line1(err2)))
    # qemu 7.2 can put a compressed cluster into a host cluster it reused
    # for data after freeing an earlier compressed one: its image is then
    # corrupt (refcount 2 on a COPIED data cluster) and no oracle
    qwhy = qemu_check('q.qcow2', d)
    if 'Marking image as corrupt' in qout + qerr:
        qwhy = 'qemu-io marked its image corrupt'
    if not qwhy:
        rc, out2, _ = run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', 'q.qcow2',
                           'model.raw'], d)
        if rc != 0:
            qwhy = 'qemu\'s image differs from the model: ' + line1(out2)
    if qwhy:
        r.note('qemu-io corrupted its own image; compared with the model only: ' + qwhy)
    else:
        if qrc != 0:
            r.fail('qemu-io: exit %s: %s %s' % (qrc, line1(qout), line1(qerr)))
        un, qn = normalize(out), normalize(qout)
        if un != qn:
            k = next((i for i in range(min(len(un), len(qn))) if un[i] != qn[i]),
                     min(len(un), len(qn)))
            r.fail('io output differs at line %d: uqcow %r, qemu-io %r' %
                   (k, un[k] if k < len(un) else None, qn[k] if k < len(qn) else None))
        why = qemu_compare('u.qcow2', 'q.qcow2', d)
        if why:
            r.fail(why + '  [%s]' % show([EXE] + ua + ['u.qcow2'], d))
        diff = map_diff('u.qcow2', 'q.qcow2', d)
        if diff:
            r.note('map differs from qemu-io\'s: ' + diff)
    if len(normalize(out)) != out.count('\n'):
        r.fail('io printed lines besides the reports: %r' % out[:300])
    if not r.fails:
        shutil.rmtree(d)
    return r


NO_UNREF_CONFIGS = [('nu-rb1', 'refcount_bits=1', None), ('nu-rb16', '', None),
                    ('nu-c512-rb4', 'cluster_size=512,refcount_bits=4', None),
                    ('nu-extl2', 'extended_l2=on', None), ('nu-lazy', 'lazy_refcounts=on', None),
                    ('nu-back', '', 'qcow2')]


def qemu_end(path, d):
    """(allocated clusters, image end offset) from qemu-img check."""
    _, out, _ = run(['qemu-img', 'check', '--output=json', path], d)
    try:
        j = json.loads(out)
        return j.get('allocated-clusters'), j.get('image-end-offset')
    except ValueError:
        return None, None


def io_no_unref(root, name, opts, backing, seed, nops):
    """discard-no-unref (qemu 8.1's option; this qemu predates it, so the
    oracles are a raw model and qemu-img check): contents as with plain
    discards, and the same commands run again allocate nothing: every
    cluster a write ever had stays the image's (exact: the second pass
    counts no allocated clusters), and the file doesn't grow."""
    r = Result('io ' + name)
    d, cs, extra = io_dir(root, name, opts, backing)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2'] + (['-o', opts] if opts else []) + extra +
        ['u.qcow2', str(SIZE)], d)
    rng = random.Random('%s-%d' % (name, seed))
    ops = io_ops(cs, rng, nops, False, backing)
    # random ranges seldom cover written clusters: discard and unmap-zero
    # what writes just wrote, then write parts of it again
    for op in [o for o in ops if o.startswith('write -P')][:12]:
        off, ln = int(op.split()[-2]), int(op.split()[-1])
        ops.append(rng.choice(['discard %d %d', 'write -z -u %d %d']) % (off, ln))
        ops.append('write -P 0x5a %d %d' % (off + ln // 3, max(1, ln // 3)))
    ua = ['io', '-o', 'discard-no-unref=on']
    ma = ['qemu-io', '-f', 'raw']
    for op in ops:
        ua += ['-c', op]
    for op in raw_model_ops(ops, cs, False):
        ma += ['-c', op]
    ends = []
    for attempt in (1, 2):
        rc, out, err = uq(ua + (['--stats'] if attempt == 2 else []) + ['u.qcow2'], d)
        if rc != 0:
            r.fail('pass %d: exit %s: %s  [%s]' % (attempt, rc, line1(err),
                                                   show([EXE] + ua + ['u.qcow2'], d)))
            return r
        why = qemu_check('u.qcow2', d)
        if why:
            r.fail('pass %d: %s  [%s]' % (attempt, why, show([EXE] + ua + ['u.qcow2'], d)))
        ends.append(qemu_end('u.qcow2', d))
    m = re.search(r'^  clusters_allocated +(\d+)$', out, re.M)
    if m:
        r.fail('the second pass allocated %s clusters' % m.group(1))
    run(ma + ['model.raw'], d)
    run(ma + ['model.raw'], d)
    rc, out, err = run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', 'u.qcow2',
                        'model.raw'], d)
    if rc != 0:
        r.fail('contents differ from the raw model: %s' % (line1(out) or line1(err)))
    if ends[0] != ends[1] or None in ends[0]:
        r.fail('the second pass grew the image: (clusters, end) %r then %r' % (ends[0], ends[1]))
    if not r.fails:
        shutil.rmtree(d)
    return r


def io_no_unref_v2(root):
    """A v2 image can't record a kept zero cluster: refused, untouched."""
    r = Result('io no-unref v2')
    d = os.path.join(root, 'io', 'nu-v2')
    os.makedirs(d)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '1M'], d)
    before = open(os.path.join(d, 'v2.qcow2'), 'rb').read()
    rc, out, err = uq(['io', '-o', 'discard-no-unref=on', '-c', 'discard 0 64k', 'v2.qcow2'], d)
    if rc != 1 or len(err.splitlines()) != 1 or 'discard-no-unref' not in err:
        r.fail('exit %s, stderr %r' % (rc, err))
    if open(os.path.join(d, 'v2.qcow2'), 'rb').read() != before:
        r.fail('the refused image changed')
    return r


def io_errors(root):
    """Bad commands: an error line each, the others still run, exit 1."""
    r = Result('io errors')
    d = os.path.join(root, 'io')
    os.makedirs(d, exist_ok=True)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', 'err.qcow2', '1M'], d)
    bad = ['write 1M 4k', 'write -c 512 512', 'write -z -P 1 0 4k', 'write -u 0 4k',
           'write -n 0 4k', 'write -P 300 0 4k', 'write 0', 'write 0 3G', 'discard 1M 4k',
           'write -x 0 4k', 'write 0 abc', 'bogus', 'write -s /nonexistent 0 4k']
    for b in bad:
        rc, out, err = uq(['io', '-c', b, '-c', 'write -P 9 0 512', 'err.qcow2'], d)
        if rc != 1 or not err.startswith('uqcow: ') or \
                'wrote 512/512 bytes at offset 0' not in out:
            r.fail('%r: exit %s, stderr %r, stdout %r' % (b, rc, err, out[:100]))
    rc, out, err = uq(['io', '-r', '-c', 'write 0 4k', 'err.qcow2'], d)
    if rc != 1:
        r.fail('write with -r: exit %s' % rc)
    why = qemu_check('err.qcow2', d)
    if why:
        r.fail(why)
    return r


def io_cases(quick, names=None):
    if names:
        return [c for c in IO_CONFIGS if c[0] in names]
    if quick:
        return [c for c in IO_CONFIGS if c[0] in ('rb1', 'rb16', 'v2', 'extl2', 'back')]
    return IO_CONFIGS


# ---- convert ----

def convert_sources(root):
    """qemu-made images to convert: data, zeros, holes, compressed, a chain."""
    d = os.path.join(root, 'convert')
    os.makedirs(d)
    srcs = []
    for name, opts, cmds in [
        ('plain', '', ['write -P 0x11 0 1M', 'write -P 0x22 3M 4k', 'write -z 5M 1M',
                       'write -P 0 7M 64k', 'write -P 0x33 9M 512', 'write -P 0x44 15M 1M']),
        ('c512', 'cluster_size=512', ['write -P 0x11 0 100k', 'write -P 0x22 1000 3000',
                                      'write -P 0x33 8M 1M']),
        ('comp', '', ['write -c -P 0x11 0 64k', 'write -c 128k 64k', 'write -P 5 1M 8k']),
        ('extl2', 'extended_l2=on', ['write -P 0x11 4k 4k', 'write -P 0x22 1M 64k',
                                     'write -z 1M 8k']),
        ('full', '', ['write -P 0x5a 0 16M']),
        ('empty', '', []),
    ]:
        args = ['qemu-img', 'create', '-q', '-f', 'qcow2'] + (['-o', opts] if opts else []) + \
            [name + '.qcow2', str(SIZE)]
        run(args, d)
        if cmds:
            q = ['qemu-io']
            for c in cmds:
                q += ['-c', c]
            run(q + [name + '.qcow2'], d)
        srcs.append(name + '.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'plain.qcow2', '-F', 'qcow2',
         'top.qcow2'], d)
    run(['qemu-io', '-c', 'write -P 0x66 2M 1M', '-c', 'write -z 0 64k', 'top.qcow2'], d)
    srcs.append('top.qcow2')
    run(['qemu-img', 'convert', '-O', 'raw', 'plain.qcow2', 'plain.raw'], d)
    srcs.append('plain.raw')
    # last cluster partial: size not a cluster multiple
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', 'odd.qcow2', str(SIZE - 4096 - 512)], d)
    run(['qemu-io', '-c', 'write -P 0x77 0 %d' % (SIZE - 4096 - 512), 'odd.qcow2'], d)
    srcs.append('odd.qcow2')
    return d, srcs


CONVERT_OPTS = [('', []), ('', ['-c']), ('cluster_size=512', []),
                ('cluster_size=512,refcount_bits=1', ['-c']), ('cluster_size=2M', []),
                ('cluster_size=2M', ['-c']), ('refcount_bits=1', []), ('refcount_bits=64', ['-c']),
                ('compat=0.10', []), ('compat=0.10', ['-c']), ('extended_l2=on', []),
                ('extended_l2=on', ['-c']), ('compression_type=zstd', ['-c']),
                ('lazy_refcounts=on', [])]


def convert_case(d, src, opts, flags):
    r = Result('convert %s -o %s %s' % (src, opts or '-', ' '.join(flags)))
    tag = re.sub(r'[^a-z0-9]+', '_', '%s_%s_%s' % (src, opts, ''.join(flags)))
    u, q = tag + '.u.qcow2', tag + '.q.qcow2'
    o = ['-o', opts] if opts else []
    a = ['convert', '-O', 'qcow2'] + o + flags + [src, u]
    rc, out, err = uq(a, d)
    if rc != 0:
        r.fail('exit %s: %s  [%s]' % (rc, err, show([EXE] + a, d)))
        return r
    run(['qemu-img', 'convert', '-O', 'qcow2'] + o + flags + [src, q], d)
    why = qemu_check(u, d) or qemu_compare(src, u, d)
    if why:
        r.fail(why + '  [%s]' % show([EXE] + a, d))
    info = qemu_info(u, d)
    want = dict(kv.split('=') for kv in opts.split(',')) if opts else {}
    fs = info['format-specific']['data']
    if 'refcount_bits' in want and fs['refcount-bits'] != int(want['refcount_bits']):
        r.fail('refcount-bits %s, want %s' % (fs['refcount-bits'], want['refcount_bits']))
    if 'cluster_size' in want and info['cluster-size'] != parse_size(want['cluster_size']):
        r.fail('cluster-size %s, want %s' % (info['cluster-size'], want['cluster_size']))
    if '-c' in flags:
        uc, qc = compressed_count(u, d), compressed_count(q, d)
        # uqcow stores a cluster compressed only if that saves a sector:
        # never with 512-byte clusters (qemu-img compresses them anyway)
        if (uc == 0) != (qc == 0) and 'cluster_size=512' not in opts:
            r.fail('%d compressed clusters, qemu-img convert -c made %d' % (uc, qc))
    diff = map_diff(u, q, d, ('present', 'data') if '-c' not in flags else ('data',))
    if diff:
        r.note('allocation differs from qemu-img convert: ' + diff)
    for f in (u, q):
        os.unlink(os.path.join(d, f))
    return r


def convert_cases(root, quick):
    d, srcs = convert_sources(root)
    opts = CONVERT_OPTS[:4] if quick else CONVERT_OPTS
    cases = [(d, s, o, f) for s in srcs for o, f in opts]
    return cases


def convert_misc(root):
    r = Result('convert misc')
    d = os.path.join(root, 'convert')
    for args in (['-O', 'raw', '-c', 'plain.qcow2', 'x.raw'],
                 ['-O', 'qcow2', '-o', 'foo=1', 'plain.qcow2', 'x.qcow2'],
                 ['-O', 'qcow2', '-o', 'refcount_bits=3', 'plain.qcow2', 'x.qcow2'],
                 ['-O', 'vmdk', 'plain.qcow2', 'x.vmdk']):
        rc, out, err = uq(['convert'] + args, d)
        if rc != 1 or len(err.splitlines()) != 1:
            r.fail('%s: exit %s, want 1 with one error line: %r' % (' '.join(args), rc, err))
    rc, out, err = uq(['convert', '-p', '-O', 'qcow2', '-m', '1', 'plain.qcow2', 'p.qcow2'], d)
    why = rc and err or qemu_check('p.qcow2', d) or qemu_compare('p.qcow2', 'plain.qcow2', d)
    if why:
        r.fail('-p -m 1: ' + why)
    return r


# ---- amend ----

def amend_case(root, src_w, dst_w):
    r = Result('amend refcount_bits %d -> %d' % (src_w, dst_w))
    d = os.path.join(root, 'amend', '%d-%d' % (src_w, dst_w))
    os.makedirs(d)
    uq(['create', '-q', '-o', 'refcount_bits=%d,cluster_size=4k' % src_w, 'a.qcow2', '64M'], d)
    ops = ['write -P 0x11 0 1M', 'write -c -P 0x22 2M 4k', 'write -P 0x33 40M 3M',
           'discard 100k 200k', 'write -z 60M 1M']
    args = ['io']
    for o in ops:
        args += ['-c', o]
    rc, _, err = uq(args + ['a.qcow2'], d)
    if rc:
        r.fail('io: exit %s: %s' % (rc, err))
        return r
    run(['qemu-img', 'convert', '-O', 'raw', 'a.qcow2', 'a.raw'], d)
    a = ['amend', '-o', 'refcount_bits=%d' % dst_w, 'a.qcow2']
    rc, out, err = uq(a, d)
    if rc:
        r.fail('exit %s: %s  [%s]' % (rc, err, show([EXE] + a, d)))
        return r
    why = qemu_check('a.qcow2', d) or qemu_compare('a.qcow2', 'a.raw', d)
    if why:
        r.fail(why + '  [%s]' % show([EXE] + a, d))
    w = qemu_info('a.qcow2', d)['format-specific']['data']['refcount-bits']
    if w != dst_w:
        r.fail('refcount-bits %d after amend, want %d' % (w, dst_w))
    # and the image stays writable
    rc, _, err = uq(['io', '-c', 'write -P 0x99 30M 1M', 'a.qcow2'], d)
    why = rc and err or qemu_check('a.qcow2', d)
    if why:
        r.fail('write after amend: ' + why)
    shutil.rmtree(d)
    return r


def amend_misc(root):
    r = Result('amend options')
    d = os.path.join(root, 'amend')
    os.makedirs(d, exist_ok=True)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', 'm.qcow2', '1M'], d)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '1M'], d)
    for args, want in ((['-o', 'compat=1.1', 'm.qcow2'], 0), (['-o', 'compat=v3', 'm.qcow2'], 0),
                       (['-o', 'compat=0.10', 'm.qcow2'], 0), (['-o', 'compat=0.10', 'v2.qcow2'], 0),
                       (['-o', 'refcount_bits=16', 'm.qcow2'], 0),
                       (['-o', 'cluster_size=4k', 'm.qcow2'], 1),
                       (['-o', 'lazy_refcounts=on', 'm.qcow2'], 1), (['-o', 'foo=1', 'm.qcow2'], 1),
                       (['-o', 'refcount_bits=3', 'm.qcow2'], 1),
                       (['-o', 'refcount_bits=8', 'v2.qcow2'], 1), (['m.qcow2'], 1),
                       (['-f', 'raw', '-o', 'refcount_bits=8', 'm.qcow2'], 1)):
        rc, _, err = uq(['amend'] + args, d)
        if rc != want or (want and len(err.splitlines()) != 1):
            r.fail('%s: exit %s, want %s: %r' % (' '.join(args), rc, want, err))
    for f in ('m.qcow2', 'v2.qcow2'):
        why = qemu_check(f, d)
        if why:
            r.fail(why)
    return r


# ---- resize ----

def resize_case(root, name, fmt, opts, steps):
    r = Result('resize %s' % name)
    d = os.path.join(root, 'resize', name)
    os.makedirs(d)
    o = ['-o', opts] if opts else []
    run(['qemu-img', 'create', '-q', '-f', fmt] + o + ['u.img', '16M'], d)
    run(['qemu-io', '-f', fmt, '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 3M 5k', 'u.img'],
        d)
    shutil.copy(os.path.join(d, 'u.img'), os.path.join(d, 'q.img'))
    for step in steps:
        rc, out, err = uq(['resize', '-f', fmt] + step[:-1] + ['u.img', step[-1]], d)
        qrc, qout, qerr = run(['qemu-img', 'resize', '-f', fmt] + step[:-1] +
                              ['q.img', step[-1]], d)
        if rc != qrc or out != qout:
            r.fail('%s: exit %s %r, qemu-img exit %s %r (%s)' %
                   (' '.join(step), rc, out, qrc, qout, err))
        if rc == 1 and len(err.splitlines()) != 1:
            r.fail('%s: want one error line, got %r' % (' '.join(step), err))
        if fmt == 'qcow2':
            why = qemu_check('u.img', d)
            if why:
                r.fail('%s: %s' % (' '.join(step), why))
        ui, qi = qemu_info('u.img', d), qemu_info('q.img', d)
        if ui['virtual-size'] != qi['virtual-size']:
            r.fail('%s: virtual size %d, qemu-img %d' % (' '.join(step), ui['virtual-size'],
                                                         qi['virtual-size']))
        # strict (allocation too) for qcow2; the raw copy isn't sparse
        strict = ['-s'] if fmt == 'qcow2' else []
        rc, out, err = run(['qemu-img', 'compare'] + strict + ['-f', fmt, '-F', fmt,
                            'u.img', 'q.img'], d)
        if rc:
            r.fail('%s: qemu-img compare -s: %s' % (' '.join(step), line1(out) or line1(err)))
    return r


RESIZE_STEPS = [['32M'], ['+1M'], ['--', '-1M'], ['--shrink', '16M'], ['1G'],
                ['--shrink', '5M'], ['--shrink', '--', '-1M'], ['3M'], ['1000'], ['0'],
                ['+0'], ['abc']]


def resize_cases():
    return [('qcow2', 'qcow2', '', RESIZE_STEPS), ('qcow2-c512', 'qcow2', 'cluster_size=512',
            RESIZE_STEPS), ('qcow2-rb1-c2M', 'qcow2', 'cluster_size=2M,refcount_bits=1',
            RESIZE_STEPS), ('qcow2-v2', 'qcow2', 'compat=0.10', RESIZE_STEPS),
            ('qcow2-extl2', 'qcow2', 'extended_l2=on', RESIZE_STEPS),
            ('raw', 'raw', '', [s for s in RESIZE_STEPS if s != ['1000']])]


def main():
    global EXE
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--uqcow', default=os.environ.get('UQCOW'), help='uqcow binary')
    ap.add_argument('--quick', action='store_true', help='a small subset')
    ap.add_argument('--only', nargs='*', help='sections: create io convert amend resize')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--io-configs', nargs='*', help='io configurations by name (rb1, v2, ...)')
    ap.add_argument('--ops', type=int, default=60, help='random io commands per image')
    ap.add_argument('-j', '--jobs', type=int, default=2)
    ap.add_argument('--wrapper', help='command prefix for uqcow, e.g. valgrind')
    ap.add_argument('-k', '--keep', action='store_true', help='keep the images')
    ap.add_argument('-v', '--verbose', action='store_true')
    a = ap.parse_args()
    EXE, rc = interop_common.setup(a.uqcow, 'interop')
    if not EXE:
        return rc
    WRAP[:] = (a.wrapper or '').split()
    root = tempfile.mkdtemp(prefix='uqcow-write-')
    only = set(a.only or ['create', 'io', 'convert', 'amend', 'resize'])
    t0 = time.monotonic()
    jobs = []       # (callable, args)
    if 'create' in only:
        jobs += [(create_case, c) for c in create_cases(root, a.quick)]
        jobs.append((create_misc, (root,)))
    if 'io' in only:
        jobs += [(io_case, (root, n, o, b, a.seed, 15 if a.quick else a.ops))
                 for n, o, b in io_cases(a.quick, a.io_configs)]
        jobs.append((io_errors, (root,)))
        jobs += [(io_no_unref, (root, n, o, b, a.seed, 15 if a.quick else a.ops))
                 for n, o, b in NO_UNREF_CONFIGS if not a.io_configs or n in a.io_configs]
        jobs.append((io_no_unref_v2, (root,)))
    if 'convert' in only:
        jobs += [(convert_case, c) for c in convert_cases(root, a.quick)]
        jobs.append((convert_misc, (root,)))
    if 'amend' in only:
        widths = [1, 16, 64] if a.quick else WIDTHS
        jobs += [(amend_case, (root, s, t)) for s in widths for t in widths if s != t]
        jobs.append((amend_misc, (root,)))
    if 'resize' in only:
        os.makedirs(os.path.join(root, 'resize'))
        jobs += [(resize_case, (root,) + c) for c in resize_cases()]

    def call(job):
        fn, args = job
        t = time.monotonic()
        try:
            res = fn(*args)
        except Exception as x:       # report, don't abort the rest
            res = Result('%s%r' % (fn.__name__, args[1:3]))
            res.fail('test error: %r' % x)
        res = res if isinstance(res, list) else [res]
        for x in res:
            x.secs = (time.monotonic() - t) / len(res)
        return res

    results = []
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
        for rs in ex.map(call, jobs):
            for r in rs:
                results.append(r)
                known = KNOWN.get(r.name)
                if known and r.fails:
                    print('XFAIL %s: %s' % (r.name, known))
                    r.fails = []
                    continue
                if known:
                    print('XPASS %s: remove it from KNOWN' % r.name)
                if r.fails or a.verbose:
                    print('%s %s (%.1fs)' % ('FAIL' if r.fails else 'ok  ', r.name, r.secs))
                for m in r.fails:
                    print('    ' + m)
                if a.verbose:
                    for m in r.notes[:10]:
                        print('    note: ' + m)
                sys.stdout.flush()
    failed = [r.name for r in results if r.fails]
    print('write interop: %d passed, %d failed (%.0fs, seed %d)' %
          (len(results) - len(failed), len(failed), time.monotonic() - t0, a.seed))
    if failed:
        print('write interop: images kept in ' + root)
        return 1
    if a.keep:
        print('write interop: images kept in ' + root)
    else:
        shutil.rmtree(root)
    return 0


if __name__ == '__main__':
    sys.exit(main())
