# SPDX-License-Identifier: MIT
"""The scale half of tools/refcount-report: tables, plots and the
recommendation from a UQCOW_BENCH_SCALE=huge run (scale/ benchmarks).

Everything printed is computed from the run (and, for sizes that can't be
run, from refcount_model's exact geometry); nothing is written by hand.
"""

import os
import shutil
import subprocess

import refcount_model as M

SIZES = [M.GiB, 16 * M.GiB, 256 * M.GiB, M.TiB]
CLUSTERS = [4 * M.KiB, 64 * M.KiB, 2 * M.MiB]
# what each use needs (largest refcount) and the workloads it is made of:
# (op, snapshots, prealloc)
USES = [
    ('no internal snapshots', 1,
     [('write', 0, 0), ('cow', 0, 0), ('discard', 0, 1), ('discard_all', 0, 1),
      ('zero_unmap', 0, 1)]),
    ('a few snapshots (<= 8)', 9,
     [('write', 0, 0), ('cow', 1, 0), ('cow', 8, 0), ('snapshot', 1, 0),
      ('snapshot', 8, 0)]),
    ('many snapshots / shared clusters (<= 1000 refs)', 1001,
     [('write', 0, 0), ('cow', 1, 0), ('cow', 8, 0), ('snapshot', 1, 0),
      ('snapshot', 8, 0)]),
    ('discard-heavy guests', 1,
     [('discard', 0, 1), ('discard_all', 0, 1), ('zero_unmap', 0, 1), ('discard', 0, 0),
      ('discard_all', 0, 0)]),
]
MEMORY_SIZE, MEMORY_CLUSTER = M.TiB, 64 * M.KiB


def seconds(b):
    unit = {'ns': 1e-9, 'us': 1e-6, 'ms': 1e-3, 's': 1.0}[b.get('time_unit', 'ns')]
    return b['real_time'] * unit


def index(bench):
    """{(op, bits, cluster, size, snaps, prealloc, cache): benchmark}"""
    out = {}
    for b in bench:
        name = b.get('run_name', b['name']).replace('/manual_time', '').replace(
            '/iterations:1', '')
        if not name.startswith('scale/') or b.get('error_occurred') or \
                b.get('run_type') == 'aggregate':
            continue
        p = M.parse_name(name)
        key = (p['op'], p['bits'], p['cluster'], p['size'], p['snapshots'], p['prealloc'],
               'full' if p['rc_cache'] else 'default')
        out.setdefault(key, b)
    return out


def get(ix, op, bits, cl, size, snaps, pre, cache='default'):
    b = ix.get((op, bits, cl, size, snaps, pre, cache))
    if b is None and cache == 'full':
        # not registered: the default already covers every block
        b = ix.get((op, bits, cl, size, snaps, pre, 'default'))
    return b


def io(b):
    return b.get('meta_reads_per_op', 0) + b.get('meta_writes_per_op', 0)


def time_per_op(b):
    return seconds(b) / max(b.get('ops', 1), 1)


def largest(ix, op, snaps, pre, cl):
    """Largest size at which (op, snaps, pre, cl) was measured for every width
    that can hold snaps snapshots."""
    for size in reversed(SIZES):
        if all(get(ix, op, w, cl, size, snaps, pre) for w in M.WIDTHS
               if M.max_refcount(w) >= 1 + snaps and not (op == 'amend' and w == 16)):
            return size
    return None


def sz(v):
    return M.fmt_bytes(v).replace('.0 ', ' ')


# ---- tables ---------------------------------------------------------------

def width_table(ix):
    """Per width, at the largest measured size of each workload, 64 KiB and
    4 KiB clusters: metadata I/O per op, refblock loads, time per op."""
    lines = []
    work = [('write', 0, 0), ('cow', 1, 0), ('discard', 0, 0), ('discard_all', 0, 0),
            ('zero_unmap', 0, 0), ('snapshot', 1, 0), ('amend', 0, 0),
            ('discard', 0, 1), ('discard_all', 0, 1), ('zero_unmap', 0, 1)]
    for cl in CLUSTERS:
        lines.append('cluster %s: metadata reads+writes per op [refcount-block loads per op] '
                     '(ms per op), default refcount cache' % sz(cl))
        head = '%-24s' % 'workload (size)'
        for w in M.WIDTHS:
            head += ' %19s' % ('w=%d' % w)
        lines.append(head)
        for op, sn, pre in work:
            size = largest(ix, op, sn, pre, cl)
            if not size:
                continue
            row = '%-24s' % ('%s%s%s %s' % (op, ' s%d' % sn if sn else '',
                                             ' pre' if pre else '', sz(size)))
            for w in M.WIDTHS:
                b = get(ix, op, w, cl, size, sn, pre)
                row += ' %19s' % ('%.4g [%.2g] (%.2g)' % (io(b), b.get('refblock_loads_per_op', 0),
                                                          time_per_op(b) * 1e3) if b else '-')
            lines.append(row)
        lines.append('')
    return lines


def cache_table(ix):
    """Default against full-coverage refcount cache where both ran: the
    preallocated images one by one, the sparse ones summed up."""
    lines = ['default (4 MiB) vs full-coverage refcount cache (registered where the '
             'blocks exceed 4 MiB):', '%-60s %11s %11s %10s %10s %9s %9s' % (
                 'preallocated image', 'io/op dflt', 'io/op full', 'loads dflt',
                 'loads full', 'ms dflt', 'ms full')]
    same = total = 0
    for key, b in sorted(ix.items(), key=lambda kv: str(kv[0])):
        if key[6] != 'full':
            continue
        d = ix.get(key[:6] + ('default',))
        if not d:
            continue
        if not key[5]:
            total += 1
            same += io(d) == io(b) and d.get('refblock_loads_per_op') == \
                b.get('refblock_loads_per_op')
            continue
        lines.append('%-60s %11.4g %11.4g %10.4g %10.4g %9.3g %9.3g' % (
            '%s w=%d %s %s (full %s)' % (key[0], key[1], sz(key[2]), sz(key[3]),
                                         sz(b.get('rc_full_bytes', 0))),
            io(d), io(b), d.get('refblock_loads_per_op', 0), b.get('refblock_loads_per_op', 0),
            time_per_op(d) * 1e3, time_per_op(b) * 1e3))
    lines.append('sparse images: %d points ran at both caches, %d with the same metadata I/O '
                 'and refcount-block loads' % (total, same))
    lines.append('(each run touches each refcount block a few times, close together: the '
                 'default cache misses only on first use, as the full one does)')
    return lines


def recommend(ix):
    """The recommendation table, computed: for each use, among the widths
    that hold the references it needs, the one with the least metadata I/O
    per op over its workloads (each at its largest measured size, every
    cluster size), then the least memory; savings against 16 bits."""
    rows = []
    for use, need, work in USES:
        cost = {}
        for w in M.WIDTHS:
            if M.max_refcount(w) < need:
                continue
            tot_io = 0.0
            ratios = []
            ok = True
            for op, sn, pre in work:
                for cl in CLUSTERS:
                    size = largest(ix, op, sn, pre, cl)
                    b = get(ix, op, w, cl, size, sn, pre) if size else None
                    b16 = get(ix, op, 16, cl, size, sn, pre) if size else None
                    if size and not b:
                        ok = False
                    if b:
                        tot_io += io(b)
                    if b and b16 and time_per_op(b16) > 0:
                        ratios.append(time_per_op(b) / time_per_op(b16))
            if ok:
                mem = M.full_metadata(MEMORY_SIZE, MEMORY_CLUSTER, w)['rc_cache_full']
                # time: the median ratio to 16 bits over the workloads (one
                # slow outlier on a shared machine moves a sum, not this)
                ratios.sort()
                med = ratios[len(ratios) // 2] if ratios else 1.0
                cost[w] = (tot_io, mem, med)
        if not cost or 16 not in cost:
            continue
        best = min(cost, key=lambda w: (round(cost[w][0], 6), cost[w][1]))
        b16 = cost[16]

        def save(i):
            if i == 2:
                return 100.0 * (1.0 - cost[best][2])
            return 100.0 * (b16[i] - cost[best][i]) / b16[i] if b16[i] else 0.0
        rows.append({'use': use, 'needs': need, 'width': best,
                     'headroom': M.max_refcount(best),
                     'io_saved_pct': save(0), 'memory_saved_pct': save(1),
                     'memory_bytes': cost[best][1], 'memory16_bytes': b16[1],
                     'time_saved_pct': save(2), 'io': cost[best][0], 'io16': b16[0]})
    return rows


def render_recommend(rows):
    lines = ['RECOMMENDATION (computed from the measured run; memory: full refcount '
             'coverage of a fully allocated %s image, %s clusters)' % (
                 sz(MEMORY_SIZE), sz(MEMORY_CLUSTER)),
             '%-48s %6s %6s %22s %14s %26s %12s' % (
                 'use', 'refs', 'width', 'headroom (2^w-1)', 'meta I/O', 'memory',
                 'time/op'),
             '%-48s %6s %6s %22s %14s %26s %12s' % ('', 'needs', '', '', 'vs 16 bits',
                                                    'vs 16 bits', 'vs 16 bits')]
    for r in rows:
        lines.append('%-48s %6d %6d %22d %13.1f%% %26s %11.1f%%' % (
            r['use'], r['needs'], r['width'], r['headroom'], -r['io_saved_pct'],
            '%s (%+.1f%%)' % (sz(r['memory_bytes']), -r['memory_saved_pct']),
            -r['time_saved_pct']))
    lines.append('(negative: less than 16 bits costs. I/O: metadata reads+writes per op summed '
                 'over the use\'s workloads at')
    lines.append(' their largest measured size, every cluster size; time: the median over '
                 'those workloads of wall time')
    lines.append(' per op against 16 bits, default cache, one run on a shared machine: noisy. '
                 'Ties in I/O go to the smaller memory.)')
    return lines


def headroom_lines():
    return ['headroom per width (largest refcount): ' + ', '.join(
        '%d: %d' % (w, M.max_refcount(w)) for w in M.WIDTHS)]


def projection_lines():
    lines = ['PROJECTIONS (model: exact geometry; fully allocated images)']
    lines.append('%8s %8s %5s %14s %14s %16s %18s' % (
        'size', 'cluster', 'bits', 'metadata', 'rc cache full', 'fleet metadata',
        'fleet rc cache'))
    for size in (16 * M.TiB, M.PiB):
        for cl in (64 * M.KiB, 2 * M.MiB):
            for w in M.WIDTHS:
                m = M.full_metadata(size, cl, w)
                f = M.fleet(size, cl, w, 10000)
                lines.append('%8s %8s %5d %14s %14s %16s %18s' % (
                    sz(size), sz(cl), w, sz(m['metadata_bytes']), sz(m['rc_cache_full']),
                    sz(f['metadata_bytes']), sz(f['rc_cache_full'])))
    lines.append('fleet: 10,000 images of that size. At 1 PiB, 4 KiB clusters would need '
                 '%s of L2 tables alone.' % sz(M.full_metadata(M.PiB, 4096, 1)['l2_bytes']))
    return lines


def model_lines(bench):
    rows = M.validate(bench)
    if not rows:
        return [], rows
    errs = sorted(r['err']['meta_io_per_op'] for r in rows)
    worst = max(rows, key=lambda r: r['err']['meta_io_per_op'])
    over = [r for r in rows if r['err']['meta_io_per_op'] > 0.10]
    lines = ['MODEL vs MEASURED (metadata reads+writes per op, every measured point)',
             '%d points: max error %.2f%% (%s: measured %.4g, model %.4g), median %.3f%%, '
             '%d over 10%%' % (len(rows), 100 * errs[-1], worst['name'][6:],
                              worst['meas']['meta_io_per_op'], worst['pred']['meta_io_per_op'],
                              100 * errs[len(errs) // 2], len(over))]
    for r in over:
        lines.append('  over: %s measured %.4g model %.4g' % (
            r['name'][6:], r['meas']['meta_io_per_op'], r['pred']['meta_io_per_op']))
    return lines, rows


def qemu_lines(q):
    if not q:
        return ['QEMU side by side: not run (refcount-report --qemu FILE from tools/scale-qemu)']
    lines = ['QEMU SIDE BY SIDE (%s; same images, same commands; strace -c -f counts)' %
             q.get('what', '')]
    lines.append('%-44s %6s %8s %7s %7s %9s %9s %6s %8s' % (
        'case', 'tool', 'seconds', 'pwrite', 'pread', 'fdatasync', 'fallocate', 'fsync',
        'uring'))
    for c in q.get('cases', []):
        for tool in ('uqcow', 'qemu'):
            r = c.get(tool)
            if not r:
                continue
            s = r.get('syscalls', {})
            lines.append('%-44s %6s %8.3f %7d %7d %9d %9d %6d %8d' % (
                c['case'], tool, r['seconds'], s.get('pwrite64', 0) + s.get('pwritev', 0),
                s.get('pread64', 0) + s.get('preadv', 0), s.get('fdatasync', 0),
                s.get('fallocate', 0), s.get('fsync', 0), s.get('io_uring_enter', 0)))
    lines.append('(uring: io_uring_enter calls; uqcow sends data through io_uring, so its pwrite '
                 'and pread are metadata;')
    lines.append(' qemu-io / qemu-img use its thread pool: pwrite and pread are data and '
                 'metadata. Seconds without strace.)')
    return lines


# ---- plots ----------------------------------------------------------------

GP_HEAD = '''set terminal svg size 1500,450 dynamic font "sans,11"
set output "%(svg)s"
set multiplot layout 1,3 title "%(title)s"
set logscale x 2
set logscale y 10
set grid
set key top left font ",9"
set xlabel "image size (GiB)"
'''


def plot(outdir, name, title, ylabel, series, model=None):
    """series: {cluster: {width: [(size_gib, y), ...]}} measured, drawn as
    points joined by lines; model: the same, drawn dashed. One panel per
    cluster size."""
    dat = os.path.join(outdir, name + '.dat')
    gp = os.path.join(outdir, name + '.gp')
    svg = os.path.join(outdir, name + '.svg')
    blocks = []
    with open(dat, 'w') as f:
        for kind, src in (('measured', series), ('model', model or {})):
            for cl in CLUSTERS:
                for w in M.WIDTHS:
                    pts = src.get(cl, {}).get(w, [])
                    if not pts:   # (an empty block would shift gnuplot's index)
                        continue
                    f.write('# %s cluster %d width %d\n' % (kind, cl, w))
                    for x, y in pts:
                        f.write('%g %g\n' % (x, y))
                    f.write('\n\n')
                    blocks.append((kind, cl, w, True))
    colors = ['#7b2cbf', '#2a9d8f', '#4ea8de', '#e09f3e', '#d4a017', '#1d3557', '#d62828']
    with open(gp, 'w') as f:
        f.write(GP_HEAD % {'svg': svg, 'title': title})
        f.write('set ylabel "%s"\n' % ylabel)
        for cl in CLUSTERS:
            f.write('set title "%s clusters"\n' % sz(cl))
            plots = []
            for i, (kind, c, w, any_) in enumerate(blocks):
                if c != cl or not any_:
                    continue
                col = colors[M.WIDTHS.index(w)]
                if kind == 'measured':
                    plots.append('"%s" index %d using 1:2 with linespoints lc rgb "%s" pt 7 '
                                 'title "%d bits"' % (dat, i, col, w))
                else:
                    plots.append('"%s" index %d using 1:2 with lines dt 2 lc rgb "%s" '
                                 'title "%d bits, model"' % (dat, i, col, w))
            if plots:
                f.write('plot ' + ', \\\n     '.join(plots) + '\n')
            else:   # nothing measured at this cluster size: an empty panel
                f.write('set label 1 "not measured" at graph 0.4, 0.5\n'
                        'plot [1:2] [1:2] NaN notitle\nunset label 1\n')
        f.write('unset multiplot\n')
    if not shutil.which('gnuplot'):
        return None
    r = subprocess.run(['gnuplot', gp], capture_output=True, text=True)
    return svg if r.returncode == 0 else None


MODEL_SIZES = [M.GiB << i for i in range(0, 15, 2)]     # 1 GiB .. 16 TiB


def plots(ix, outdir):
    out = []
    io_s, io_m, mem_s, t_s = {}, {}, {}, {}
    for cl in CLUSTERS:
        for w in M.WIDTHS:
            pts, tp = [], []
            for size in SIZES:
                b = get(ix, 'discard', w, cl, size, 0, 1)
                if b:
                    pts.append((size / M.GiB, io(b)))
                b = get(ix, 'discard', w, cl, size, 0, 0)
                if b:
                    tp.append((size / M.GiB, time_per_op(b) * 1e3))
            io_s.setdefault(cl, {})[w] = pts
            io_m.setdefault(cl, {})[w] = [
                (s / M.GiB, M.predict('discard', w, cl, s, prealloc=1)['meta_io_per_op'])
                for s in MODEL_SIZES]
            t_s.setdefault(cl, {})[w] = tp
            mem_s.setdefault(cl, {})[w] = [
                (s / M.GiB, M.full_metadata(s, cl, w)['rc_cache_full'] / M.MiB)
                for s in MODEL_SIZES + [M.PiB]]
    out.append(plot(outdir, 'refcount-io', 'metadata I/O per one-cluster discard (128 spread '
                    'over a preallocated image) vs image size: measured, and the model',
                    'metadata reads + writes per op', io_s, io_m))
    out.append(plot(outdir, 'refcount-memory', 'refcount cache for full coverage vs image '
                    'size (fully allocated; exact geometry)', 'MiB', {}, mem_s))
    out.append(plot(outdir, 'refcount-time', 'wall time per one-cluster discard (sparse '
                    'image), default refcount cache', 'ms per op', t_s))
    return [s for s in out if s]


def report(data, outdir, qemu=None):
    bench = data.get('benchmarks', [])
    ix = index(bench)
    if not ix:
        return None, None
    rec = recommend(ix)
    mlines, mrows = model_lines(bench)
    lines = ['refcount widths at scale: %d measured points (UQCOW_BENCH_SCALE=huge, %d '
             'operations each)' % (len(ix), M.OPS), '']
    lines += width_table(ix)
    lines += cache_table(ix) + ['']
    lines += mlines + ['']
    lines += projection_lines() + ['']
    lines += qemu_lines(qemu) + ['']
    lines += headroom_lines()
    lines += render_recommend(rec)
    svgs = plots(ix, outdir)
    summary = {'recommendation': rec,
               'model': [{'name': r['name'], 'measured': r['meas'], 'model': r['pred'],
                          'error': r['err']} for r in mrows],
               'plots': svgs}
    return '\n'.join(lines) + '\n', summary
