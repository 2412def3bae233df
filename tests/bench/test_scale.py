#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The scale benchmarks and the refcount cost model (issue 14).

  test_scale.py SOURCE_ROOT [UQCOW_BENCH]

1. The model's geometry against facts of the format (entries per block,
   headroom, the refcount blocks of known images).
2. Determinism: UQCOW_BENCH_SCALE=huge's 1 GiB, 64 KiB-cluster points
   (every width and workload) run twice with one iteration each give
   identical counts, every *_per_op counter equal.
3. The model predicts each of those points' metadata I/O per op within
   10%.
Without a uqcow-bench (Google Benchmark not installed) only 1 runs.
"""
import json
import os
import subprocess
import sys
import tempfile

root = sys.argv[1]
sys.path.insert(0, os.path.join(root, 'tools'))
import refcount_model as M  # noqa: E402

FILTER = '^scale/.*/cluster:64k/image:1G/'


def fail(msg):
    print('FAIL: ' + msg)
    sys.exit(1)


def geometry():
    assert M.per_block(16, 65536) == 32768
    assert M.per_block(1, 4096) == 32768 and M.per_block(64, 4096) == 512
    assert [M.max_refcount(w) for w in (1, 2, 4, 16)] == [1, 3, 15, 65535]
    # 1 TiB of 64 KiB clusters at 16 bits: 16 Mi data clusters and 2048
    # L2 tables need 513 blocks of 32768 entries
    m = M.full_metadata(M.TiB, 65536, 16)
    assert m['l2_tables'] == 2048 and m['refcount_blocks'] == 513, m
    assert m['rc_cache_full'] == 513 * 65536
    # the widths scale the blocks (and their cache) linearly
    b1 = M.full_metadata(M.TiB, 65536, 1)['refcount_blocks']
    b64 = M.full_metadata(M.TiB, 65536, 64)['refcount_blocks']
    assert 60 * b1 < b64 < 66 * b1, (b1, b64)
    # spots: one per stripe, inside the image, cluster aligned
    s = M.spots(128, M.GiB, 65536)
    assert len(s) == 128 and all(o % 65536 == 0 and o < M.GiB for o in s)
    assert all(i * (M.GiB // 128) <= o < (i + 1) * (M.GiB // 128) for i, o in enumerate(s))
    assert M.parse_name('scale/op:cow/refcount_bits:4/cluster:2M/image:1T/snapshots:8/'
                        'prealloc:0/rc_cache:full/ops:128')['size'] == M.TiB


def run(bench, out, d):
    env = dict(os.environ, UQCOW_BENCH_SCALE='huge', UQCOW_BENCH_ITERS='1',
               UQCOW_BENCH_IO='psync', UQCOW_BENCH_DIR=d)
    p = subprocess.run([bench, '--benchmark_filter=' + FILTER, '--benchmark_repetitions=1',
                        '--benchmark_out=' + out, '--benchmark_out_format=json'],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        fail('uqcow-bench exit %d: %s' % (p.returncode, p.stderr[-2000:]))
    with open(out) as f:
        return json.load(f)['benchmarks']


def counts(bench):
    return {b['name']: {k: v for k, v in b.items() if k.endswith('_per_op') or
                        k in ('ops', 'refcount_blocks', 'l2_tables', 'file_bytes')}
            for b in bench}


def main():
    geometry()
    print('model geometry: ok')
    bench = sys.argv[2] if len(sys.argv) > 2 else ''
    if not bench or not os.access(bench, os.X_OK):
        print('no uqcow-bench: determinism and model checks skipped')
        return 0
    with tempfile.TemporaryDirectory(prefix='uqcow-scale-test.') as d:
        a = run(bench, os.path.join(d, 'a.json'), d)
        b = run(bench, os.path.join(d, 'b.json'), d)
    ca, cb = counts(a), counts(b)
    if not ca or ca.keys() != cb.keys():
        fail('the two runs have different benchmarks (%d, %d)' % (len(ca), len(cb)))
    for name in ca:
        if ca[name] != cb[name]:
            diff = {k: (ca[name].get(k), cb[name].get(k)) for k in ca[name]
                    if ca[name].get(k) != cb[name].get(k)}
            fail('%s: counts differ between two runs: %s' % (name, diff))
    print('determinism: %d points, identical counts in two runs' % len(ca))
    rows = M.validate(a)
    worst = max(rows, key=lambda r: r['err']['meta_io_per_op'])
    print('model: %d points, worst error %.2f%% (%s)' % (
        len(rows), 100 * worst['err']['meta_io_per_op'], worst['name']))
    if worst['err']['meta_io_per_op'] > 0.10:
        fail('the model is off by more than 10% at ' + worst['name'])
    print('ok')
    return 0


if __name__ == '__main__':
    sys.exit(main())
