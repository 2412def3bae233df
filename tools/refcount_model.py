# SPDX-License-Identifier: MIT
"""Cost model of qcow2 refcount widths in uqcow (python3 stdlib only).

Two halves:

* Geometry, exact from the format (docs/interop/qcow2.txt): a refcount
  block of C-byte clusters holds C*8/w entries of w bits; a fully
  allocated image of S bytes has S/C data clusters, S/C/(C/8) L2 tables,
  and refcount blocks covering all of them plus themselves. From that:
  metadata bytes, refcount block count, and the cache memory that holds
  every refcount block ("full coverage"), for any size, fleets included.

* Metadata I/O per operation of the scale workloads (bench/bench_scale.c:
  OPS operations at spots spread over the whole virtual size). The spots
  are replayed exactly (the same xorshift64* as the benchmark), so the
  distinct L2 tables and refcount blocks an operation touches are counted,
  not guessed; what the engine does per table, per block and per flush
  are small per-workload constants (UNIT below), read off the engine's
  write-back rules: a block or table is read once when first touched and
  written once per flush it is dirty in; a flush syncs 2..6 times.
  Everything that grows with the width, the cluster size or the image
  size is in the touched counts; the constants do not depend on them.

Functions take bits (refcount width w), cluster (bytes), size (bytes),
snapshots, rc_cache (bytes, 0 = the default 4 MiB) and prealloc (0: the
file holds only what was written; 1: metadata preallocation, every
cluster allocated so refcount blocks span the whole size).
"""

import math

KiB, MiB, GiB, TiB, PiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40, 1 << 50
OPS = 128                       # bench_scale.c's operations per run
DEFAULT_RC_CACHE = 4 * MiB      # UQ_DEFAULT_REFCOUNT_CACHE
DEFAULT_L2_CACHE_MAX = 32 * MiB  # UQ_DEFAULT_L2_CACHE_MAX
FREE_BUDGET = 256 * MiB          # UQ_FREE_BUDGET_BYTES
WIDTHS = [1, 2, 4, 8, 16, 32, 64]
MASK64 = (1 << 64) - 1


# ---- geometry -------------------------------------------------------------

def per_block(bits, cluster):
    """Refcount entries in one block."""
    return cluster * 8 // bits


def max_refcount(bits):
    """Largest refcount a width holds: 2^w - 1 (headroom)."""
    return (1 << bits) - 1


def l2_tables(size, cluster):
    entries = cluster // 8
    return -(-(-(-size // cluster)) // entries)


def l1_bytes(size, cluster):
    return l2_tables(size, cluster) * 8


def refcount_blocks(host_clusters, bits, cluster):
    """Blocks covering host_clusters clusters and themselves (and the
    refcount table's clusters), the fixpoint qemu and uqcow both reach."""
    per = per_block(bits, cluster)
    blocks = -(-host_clusters // per)
    while True:
        table = -(-blocks * 8 // cluster)
        need = -(-(host_clusters + blocks + table) // per)
        if need <= blocks:
            return blocks
        blocks = need


def full_metadata(size, cluster, bits, allocated=1.0):
    """Metadata of an image with a fraction `allocated` of its clusters
    written: header, L1, L2 tables, refcount table and blocks (bytes)."""
    data = int(math.ceil(size / cluster * allocated))
    l2 = l2_tables(size, cluster) if allocated >= 1 else \
        min(l2_tables(size, cluster), data)
    l1c = -(-l1_bytes(size, cluster) // cluster)
    host = 1 + l1c + l2 + data
    rb = refcount_blocks(host, bits, cluster)
    rt = -(-rb * 8 // cluster)
    return {
        'data_clusters': data, 'l2_tables': l2, 'refcount_blocks': rb,
        'l1_bytes': l1_bytes(size, cluster), 'l2_bytes': l2 * cluster,
        'refcount_bytes': rb * cluster, 'reftable_bytes': rt * cluster,
        'metadata_bytes': (1 + l1c + l2 + rb + rt) * cluster,
        # every block in memory: what a refcount cache must hold
        'rc_cache_full': rb * cluster,
        # an L2 cache that maps every cluster (for comparison)
        'l2_cache_full': l2 * cluster,
    }


def fleet(size, cluster, bits, images=10000, allocated=1.0):
    m = full_metadata(size, cluster, bits, allocated)
    return {k: v * images for k, v in m.items()}


# ---- the workload's spots, replayed -----------------------------------------

def _xorshift(s):
    x = s
    x ^= x >> 12
    x ^= (x << 25) & MASK64
    x ^= x >> 27
    return x, (x * 0x2545f4914f6cdd1d) & MASK64


def spot(i, ops, size, cluster):
    """bench_scale.c's spot(): the i-th stripe's pseudo-random cluster."""
    stripe = size // ops // cluster
    s = 0x9e3779b97f4a7c15 ^ i
    r = 0
    if stripe > 1:
        s, r = _xorshift(s)
        r %= stripe
    return (i * stripe + r) * cluster


def spots(ops, size, cluster):
    return [spot(i, ops, size, cluster) for i in range(ops)]


def _layout(size, cluster, bits, prealloc, ops):
    """Counts the workloads touch: distinct L2 tables of the spots, host
    clusters of the file, refcount blocks of the file and of the spots."""
    entries = cluster // 8
    g = [o // cluster for o in spots(ops, size, cluster)]
    tables = len({c // entries for c in g})
    l1c = -(-l1_bytes(size, cluster) // cluster)
    per = per_block(bits, cluster)
    if prealloc:
        # uq_preallocate: in guest order, each L2 table after the first
        # data cluster it maps, refcount blocks as the file grows
        base = 1 + l1c + 2
        host = [base + c + c // entries + 1 + c // per for c in g]
        total = l2_tables(size, cluster)
        fileclusters = base + size // cluster + total
        blocks_file = refcount_blocks(fileclusters, bits, cluster)
        blocks_spots = len({h // per for h in host})
        tables_all = total
    else:
        # written in setup (op:write: in the run): a data cluster and (new
        # table) an L2 table each
        fileclusters = 1 + l1c + 2 + len(g) + tables
        blocks_file = refcount_blocks(fileclusters, bits, cluster)
        blocks_spots = blocks_file
        tables_all = tables
    return {'tables': tables, 'tables_all': tables_all, 'file_clusters': fileclusters,
            'blocks_file': blocks_file, 'blocks_spots': blocks_spots, 'l1_clusters': l1c}


def l2_slots(size, cluster, writer=True):
    """Tables in the default L2 cache: the image's (twice that for a
    writer, so that all can be dirty), at most 32 MiB."""
    b = -(-size // cluster) * 8
    b = -(-b // cluster) * cluster * (2 if writer else 1)
    return max(2, min(b, DEFAULT_L2_CACHE_MAX) // cluster)


# ---- metadata I/O per operation ---------------------------------------------

def shuffled(n):
    """bench_scale.c's shuffle(): the order of rewrites and small discards."""
    v = list(range(n))
    s = 0x5eed5eed5eed
    for i in range(n, 1, -1):
        s, r = _xorshift(s)
        j = r % i
        v[i - 1], v[j] = v[j], v[i - 1]
    return v


class _Engine:
    """What uqcow's write-back rules (engine/writeback.c) do with a
    sequence of operations, as counts: an L2 cache of `slots` tables
    (CLOCK, as l2cache.c; a dirty table is never dropped); the half-dirty
    rule of l2_for_write: a table about to become dirty while half the
    slots are dirty starts a batch write-back (uq_l2_writeback: refcount
    increases, a sync unless only an earlier batch's tables were written
    since, then every dirty table; no frees, no L1). Refcount blocks are
    loaded once each (the runs touch each block a few times at most: the
    cache size changes evictions, not loads, see refblock_loads in the
    report). The closing flush (uq_meta_flush): increases, sync, tables,
    then the L1 table after a sync when a table moved or was dropped,
    then, after a sync, the deferred frees: every block they touch is
    written, and a final sync. A sync with nothing written since the last
    one is skipped."""

    def __init__(self, slots):
        self.slots = slots
        self.keys, self.ref, self.where, self.hand = [None] * slots, [False] * slots, {}, 0
        self.dirty = set()
        self.rb_seen = set()
        self.rb_inc, self.rb_free = set(), set()
        self.l1 = False
        self.freed = 0             # clusters in deferred frees
        self.pending = False       # written since the last sync
        self.since_batch = True    # written since a batch's table writes
        self.reads = self.writes = self.syncs = self.loads = 0

    def _write(self, n=1):
        if n:
            self.writes += n
            self.pending = self.since_batch = True

    def data(self):
        """A data write (counted by the file, not as metadata)."""
        self.pending = self.since_batch = True

    def _sync(self):
        if self.pending:
            self.syncs += 1
            self.pending = False

    def batch(self):
        self._write(len(self.rb_inc))
        self.rb_inc.clear()
        if self.since_batch:
            self._sync()
        if self.dirty:
            self._write(len(self.dirty))
            self.dirty.clear()
            self.since_batch = False

    def flush(self):
        if not (self.dirty or self.rb_inc or self.rb_free or self.l1):
            self._sync()
            return
        self._write(len(self.rb_inc))
        self.rb_inc.clear()
        self._sync()
        self._write(len(self.dirty))
        self.dirty.clear()
        if self.l1:
            self._sync()
            self._write(1)
            self.l1 = False
        if self.rb_free:
            self._sync()
            self.pending = True    # the punches of what was freed
            self._write(len(self.rb_free))
            self.rb_free.clear()
        self.freed = 0
        self._sync()

    def table(self, key, write=True, load=True):
        """Use L2 table key (load it if not cached); dirty it when write."""
        if write and key not in self.dirty and (len(self.dirty) + 1) * 2 > self.slots:
            self.batch()
        if key in self.where:
            self.ref[self.where[key]] = True
        else:
            if load:
                self.reads += 1
            self._claim(key)
        if write:
            self.dirty.add(key)

    def drop(self, key, freed, cluster):
        """A discard of the table's whole span: read around the cache when
        not in it, its freed clusters (and itself) deferred; past the
        budget of deferred frees (FREE_BUDGET bytes), a flush."""
        i = self.where.pop(key, None)
        if i is None:
            self.reads += 1
        else:
            self.keys[i] = None
        self.l1 = True
        self.freed += freed + 1
        if self.freed * cluster >= FREE_BUDGET:
            self.flush()

    def _claim(self, key):
        # l2cache.c's victim_locked: CLOCK, dirty slots never taken
        n = self.slots
        for _ in range(2 * n):
            i = self.hand
            self.hand = (self.hand + 1) % n
            k = self.keys[i]
            if k is None:
                break
            if k in self.dirty:
                continue
            if self.ref[i]:
                self.ref[i] = False
                continue
            del self.where[k]
            break
        else:
            return
        self.keys[i] = key
        self.ref[i] = True
        self.where[key] = i

    def block(self, idx, free=False):
        if idx not in self.rb_seen:
            self.rb_seen.add(idx)
            self.reads += 1
            self.loads += 1
        (self.rb_free if free else self.rb_inc).add(idx)


def predict(op, bits, cluster, size, snapshots=0, rc_cache=0, prealloc=0, ops=OPS):
    """Expected meta_reads, meta_writes, syncs and refblock_loads per
    operation of a scale workload (bench_scale.c's op names)."""
    entries, per = cluster // 8, per_block(bits, cluster)
    g = [o // cluster for o in spots(ops, size, cluster)]
    l1c = -(-l1_bytes(size, cluster) // cluster)
    base = 1 + l1c + 2                # header, L1, refcount table and block
    total = l2_tables(size, cluster)
    if prealloc:
        # uq_preallocate: guest order, each L2 table after the first data
        # cluster it maps, refcount blocks as the file grows
        host = [base + c + c // entries + 1 + c // per for c in g]
        end = base + size // cluster + total
    else:
        # setup (op:write: the run itself) allocates each spot's cluster,
        # and its table when new, at the end of the file
        host, seen, h = [], {}, base
        for c in g:
            if c // entries not in seen:
                seen[c // entries] = h       # the table, before its first cluster
                h += 1
            host.append(h)
            h += 1
        end = h
    e = _Engine(l2_slots(size, cluster))
    n = ops
    order = shuffled(ops) if op in ('cow', 'discard', 'zero', 'zero_unmap') else range(ops)
    if op == 'write':
        made = set()
        for i in order:
            t = g[i] // entries
            e.table(t, load=t in made)
            if t not in made:
                made.add(t)
                e.l1 = True
            e.block(host[i] // per)
            e.data()
    elif op == 'cow':
        copied = set()
        for i in order:
            t = g[i] // entries
            if snapshots == 0:
                e.table(t, write=False)
                e.data()                           # in place
                continue
            if t not in copied:
                e.table(('old', t), write=False)   # read, then copied
                copied.add(t)
                e.l1 = True
                e.block(end // per)
                end += 1
            e.table(t, load=False)
            e.data()
            e.block(end // per)                    # the new data cluster
            end += 1
            e.block(host[i] // per, free=True)     # one reference less
    elif op in ('discard', 'zero_unmap', 'zero'):
        for i in order:
            e.table(g[i] // entries)
            if op != 'zero':
                e.block(host[i] // per, free=True)
    elif op == 'discard_all':
        n = 1
        if prealloc:
            def at(c):
                return base + c + c // entries + 1 + c // per
            last = size // cluster - 1
            # each table's whole span: the table is dropped (read, its
            # clusters and itself freed, the L1 entry cleared)
            for t in range(total):
                first = t * entries
                for b in range(at(first) // per, at(min(first + entries - 1, last)) // per + 1):
                    e.block(b, free=True)
                e.drop(t, min(entries, size // cluster - first), cluster)
        else:
            for t in sorted(seen):
                mine = [i for i in range(ops) if g[i] // entries == t]
                for i in mine:
                    e.block(host[i] // per, free=True)
                e.block(seen[t] // per, free=True)
                e.drop(t, len(mine), cluster)
    elif op == 'snapshot':
        s = snapshots
        L = len({c // entries for c in g})
        chunks = -(-l1_bytes(size, cluster) // MiB)
        rf = refcount_blocks(end, bits, cluster)
        e.reads = s * (4 * L + 3)
        e.writes = 2 * L + 10 * s - 1 + s * max(0, chunks - 1)
        e.syncs, e.loads, n = 11 * s + 1, rf * s, 2 * s
    elif op == 'amend':
        r16 = refcount_blocks(end, 16, cluster)
        e.reads, e.writes = r16 + 1, refcount_blocks(end, bits, cluster) + 2
        e.syncs, e.loads, n = 3, r16, 1
    else:
        raise ValueError('unknown op %r' % op)
    if op not in ('snapshot', 'amend'):
        e.flush()
    out = {'meta_reads_per_op': e.reads / n, 'meta_writes_per_op': e.writes / n,
           'syncs_per_op': e.syncs / n, 'refblock_loads_per_op': e.loads / n}
    out['meta_io_per_op'] = out['meta_reads_per_op'] + out['meta_writes_per_op']
    return out


# ---- checking against a run -------------------------------------------------

def parse_name(name):
    """{'op': .., 'bits': .., ...} from a scale/ benchmark name."""
    units = {'k': KiB, 'M': MiB, 'G': GiB, 'T': TiB}
    kv = {}
    for part in name.split('/')[1:]:
        if ':' in part:
            k, v = part.split(':', 1)
            kv[k] = v

    def size(v):
        return int(v[:-1]) * units[v[-1]] if v[-1] in units else int(v)
    return {'op': kv['op'], 'bits': int(kv['refcount_bits']),
            'cluster': size(kv['cluster']), 'size': size(kv['image']),
            'snapshots': int(kv['snapshots']), 'prealloc': int(kv['prealloc']),
            'rc_cache': 0 if kv['rc_cache'] == 'default' else 'full',
            'ops': int(kv['ops'])}


KEYS = ['meta_reads_per_op', 'meta_writes_per_op', 'syncs_per_op']


def validate(bench):
    """Per measured scale benchmark: predicted, measured, relative error
    of metadata I/O per op (reads + writes) and of each count."""
    rows = []
    for b in bench:
        name = b.get('run_name', b['name']).replace('/manual_time', '')
        if not name.startswith('scale/') or b.get('error_occurred'):
            continue
        p = parse_name(name)
        rc = b.get('rc_cache_bytes', 0) if p['rc_cache'] == 'full' else 0
        pred = predict(p['op'], p['bits'], p['cluster'], p['size'], p['snapshots'],
                       int(rc), p['prealloc'], p['ops'])
        meas = {k: b.get(k, 0.0) for k in KEYS + ['refblock_loads_per_op']}
        meas['meta_io_per_op'] = meas['meta_reads_per_op'] + meas['meta_writes_per_op']
        err = {}
        for k in ['meta_io_per_op'] + KEYS:
            m, q = meas[k], pred[k]
            err[k] = 0.0 if m == q else abs(q - m) / max(abs(m), 1e-12)
        rows.append({'name': name, 'params': p, 'pred': pred, 'meas': meas, 'err': err})
    return rows


def fmt_bytes(v):
    for unit, div in (('PiB', PiB), ('TiB', TiB), ('GiB', GiB), ('MiB', MiB), ('KiB', KiB)):
        if v >= div:
            return '%.1f %s' % (v / div, unit)
    return '%d B' % v
