#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The exact-cost gate (tools/bench-compare --exact) fails on a real
difference and passes an unchanged run. Works on the committed baseline's
JSON, so it needs no valgrind and runs in a second:

  - the baseline against itself passes;
  - a real difference fails: refcount width 64's figures under width 1's
    names (4 KiB clusters: width 64 writes more refcount blocks per op);
  - one more sync per operation in one benchmark fails, as does any count
    increase; a count decrease passes (reported as better);
  - instructions: +3% fails at the default 2% threshold, +1% passes, and
    +3% only shows when the runs' cpu_class differ.
"""
import copy
import json
import os
import subprocess
import sys
import tempfile

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', '..')
COMPARE = os.path.join(ROOT, 'tools', 'bench-compare')
BASE = os.path.join(ROOT, 'bench', 'baseline', 'exact.json')


def gate(old, new, *extra):
    with tempfile.TemporaryDirectory() as d:
        a, b = os.path.join(d, 'old.json'), os.path.join(d, 'new.json')
        for p, doc in ((a, old), (b, new)):
            with open(p, 'w') as f:
                json.dump(doc, f)
        r = subprocess.run([sys.executable, COMPARE, '--exact', a, b, *extra],
                           capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr


def entry(doc, name):
    return next(e for e in doc['benchmarks'] if e['name'] == name)


def expect(what, got, want, out):
    if got != want:
        print('FAIL: %s: exit %d, want %d\n%s' % (what, got, want, out))
        sys.exit(1)
    print('ok: %s (exit %d)' % (what, got))


def main():
    with open(BASE) as f:
        base = json.load(f)
    rc, out = gate(base, base)
    expect('unchanged run passes', rc, 0, out)

    # a real difference: another width's costs under the same names
    one = 'alloc_write/refcount_bits:1/cluster:4k/io:4k/qd:32/clusters:2048/backend:psync'
    wide = one.replace('refcount_bits:1/', 'refcount_bits:64/')
    new = copy.deepcopy(base)
    e1, e64 = entry(new, one), entry(base, wide)
    assert e64['refblock_writes_per_op'] > e1['refblock_writes_per_op'], \
        'the fixture no longer differs by width'
    for k, v in e64.items():
        if k.endswith('_per_op'):
            e1[k] = v
    rc, out = gate(base, new)
    expect('width 64 against width 1 fails', rc, 1, out)
    if 'refblock_writes_per_op' not in out:
        print('FAIL: the verdict does not name the refcount block writes\n' + out)
        sys.exit(1)

    # one more sync per flush: alloc_write flushes once per run
    new = copy.deepcopy(base)
    e = entry(new, one)
    e['syncs_per_op'] += 1.0 / e['ops']
    rc, out = gate(base, new)
    expect('one more sync per run fails', rc, 1, out)
    rc, out = gate(base, new, '--count-threshold', '50')
    expect('... unless a threshold allows it', rc, 0, out)

    new = copy.deepcopy(base)
    entry(new, one)['meta_writes_per_op'] *= 0.5
    rc, out = gate(base, new)
    expect('fewer metadata writes pass', rc, 0, out)

    for pct, want in ((3.0, 1), (1.0, 0)):
        new = copy.deepcopy(base)
        entry(new, one)['instructions_per_op'] *= 1 + pct / 100
        rc, out = gate(base, new)
        expect('instructions +%g%%' % pct, rc, want, out)
    new['context'] = dict(new['context'], cpu_class='other')
    entry(new, one)['instructions_per_op'] *= 1.03
    rc, out = gate(base, new)
    expect('instructions on another CPU class are shown, not judged', rc, 0, out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
