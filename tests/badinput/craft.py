#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Generate hostile qcow2 images for the uqcow bad-input suite.

Usage: craft.py OUTDIR

Writes one image (or, for backing-chain cases, one directory of images) per
case into OUTDIR, plus OUTDIR/manifest.json describing what uqcow is
expected to do with each of them.  Valid starting images come from qemu-img
and qemu-io (different cluster sizes, v2/v3, compressed, snapshots, ...);
the hostile ones are made by patching header fields and tables at offsets
found by parsing the image, or are built from scratch here.

Expected outcomes, per command (info, map, convert, chain):
  ok      exit 0
  fail    exit 1, exactly one non-empty line on stderr
  refuse  fail, and the line names the image and one of the case keywords
Presets: REFUSE (every command refuses), READ_ERROR (info succeeds, the
read in convert fails), OK (tolerated input), and looser combinations
where the format leaves the choice to the implementation (e.g. a corrupt
refcount table entry may be refused at open or ignored by a read-only
open).

Only the python3 standard library is used, plus qemu-img/qemu-io as
external programs.
"""

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

# ---------------------------------------------------------------- format ----

MAGIC = 0x514649FB

# header field -> (offset, struct format), big-endian
FIELDS = {
    'magic': (0, '>I'),
    'version': (4, '>I'),
    'backing_file_offset': (8, '>Q'),
    'backing_file_size': (16, '>I'),
    'cluster_bits': (20, '>I'),
    'size': (24, '>Q'),
    'crypt_method': (32, '>I'),
    'l1_size': (36, '>I'),
    'l1_table_offset': (40, '>Q'),
    'refcount_table_offset': (48, '>Q'),
    'refcount_table_clusters': (56, '>I'),
    'nb_snapshots': (60, '>I'),
    'snapshots_offset': (64, '>Q'),
    'incompatible_features': (72, '>Q'),
    'compatible_features': (80, '>Q'),
    'autoclear_features': (88, '>Q'),
    'refcount_order': (96, '>I'),
    'header_length': (100, '>I'),
    'compression_type': (104, '>B'),
}

EXT_END = 0x00000000
EXT_BACKING_FMT = 0xE2792ACA
EXT_FEATURES = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
AUTOCLEAR_BITMAPS = 1 << 0

OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
L2_OFFSET_MASK = 0x00FFFFFFFFFFFE00

SNAP_HDR = struct.Struct('>QIHHIIQII')   # 40 bytes


def get(data, field):
    off, fmt = FIELDS[field]
    return struct.unpack_from(fmt, data, off)[0]


def put(data, field, value):
    off, fmt = FIELDS[field]
    struct.pack_into(fmt, data, off, value)


class Image:
    """Just enough of a parser to find where things are."""

    def __init__(self, data):
        self.data = bytearray(data)
        d = self.data
        self.version = get(d, 'version')
        self.cluster_bits = get(d, 'cluster_bits')
        self.cs = 1 << self.cluster_bits
        self.l1_off = get(d, 'l1_table_offset')
        self.l1_size = get(d, 'l1_size')
        self.rt_off = get(d, 'refcount_table_offset')
        self.snap_off = get(d, 'snapshots_offset')
        self.nb_snap = get(d, 'nb_snapshots')
        if self.version >= 3:
            self.hlen = get(d, 'header_length')
            self.incompat = get(d, 'incompatible_features')
        else:
            self.hlen = 72
            self.incompat = 0
        self.extl2 = bool(self.incompat & INCOMPAT_EXTL2)
        self.l2_entry = 16 if self.extl2 else 8

    def exts(self):
        """[(type, offset of the extension header, length)]"""
        out = []
        off = self.hlen
        while off + 8 <= self.cs:
            typ, ln = struct.unpack_from('>II', self.data, off)
            if typ == EXT_END:
                break
            out.append((typ, off, ln))
            off += 8 + ((ln + 7) & ~7)
        return out

    def ext_end(self):
        """Offset of the end marker."""
        exts = self.exts()
        if not exts:
            return self.hlen
        _, off, ln = exts[-1]
        return off + 8 + ((ln + 7) & ~7)

    def l1(self, i):
        return struct.unpack_from('>Q', self.data, self.l1_off + 8 * i)[0]

    def l2_off(self, i=0):
        return self.l1(i) & L2_OFFSET_MASK

    def l2_entry_off(self, guest_cluster):
        per = self.cs // self.l2_entry
        l2 = self.l2_off(guest_cluster // per)
        assert l2, 'no L2 table there'
        return l2 + (guest_cluster % per) * self.l2_entry

    def l2(self, guest_cluster):
        return struct.unpack_from('>Q', self.data,
                                  self.l2_entry_off(guest_cluster))[0]

    def set_l2(self, guest_cluster, value):
        struct.pack_into('>Q', self.data, self.l2_entry_off(guest_cluster),
                         value)

    def csize_shift(self):
        return 62 - (self.cluster_bits - 8)

    def compressed(self, entry):
        """(offset, byte span) of a compressed L2 entry."""
        shift = self.csize_shift()
        off = entry & ((1 << shift) - 1)
        nsec = ((entry >> shift) & ((1 << (self.cluster_bits - 8)) - 1)) + 1
        return off, (off & ~511) + nsec * 512 - off

    def compressed_entry(self, off, nbytes):
        shift = self.csize_shift()
        nsec = ((off + nbytes + 511) // 512) - (off // 512)
        assert 1 <= nsec <= (1 << (self.cluster_bits - 8))
        return OFLAG_COMPRESSED | ((nsec - 1) << shift) | off

    def snapshots(self):
        """[offset of each snapshot entry]"""
        out = []
        off = self.snap_off
        for _ in range(self.nb_snap):
            out.append(off)
            (l1o, l1s, idl, nml, ds, dn, vmc, vms,
             extra) = SNAP_HDR.unpack_from(self.data, off)
            ln = SNAP_HDR.size + extra + idl + nml
            off += (ln + 7) & ~7
        return out


def ext_bytes(typ, payload):
    pad = (-len(payload)) % 8
    return struct.pack('>II', typ, len(payload)) + payload + b'\0' * pad


def feature_table(entries):
    """entries: [(type, bit, name)]"""
    out = b''
    for typ, bit, name in entries:
        nm = name.encode()
        out += struct.pack('>BB', typ, bit) + nm + b'\0' * (46 - len(nm))
    return out


STD_FEATURES = [(0, 0, 'dirty bit'), (0, 1, 'corrupt bit'),
                (0, 2, 'external data file'), (0, 3, 'compression type'),
                (0, 4, 'extended L2 entries'), (1, 0, 'lazy refcounts'),
                (2, 0, 'bitmaps'), (2, 1, 'raw external data')]


def scratch(size=1 << 20, cluster_bits=16, version=3, backing=None,
            backing_fmt='qcow2', exts=None, incompat=0, compat=0,
            autoclear=0, features=True, data_file=None, raw_exts=b''):
    """Build a valid, empty qcow2 image in python.

    Layout: cluster 0 header, extensions and backing name; cluster 1
    refcount table; cluster 2 refcount block (16-bit); then the L1 table.
    """
    cs = 1 << cluster_bits
    hlen = 72 if version == 2 else 112
    area = b''
    if backing is not None and backing_fmt is not None:
        area += ext_bytes(EXT_BACKING_FMT, backing_fmt.encode())
    if data_file is not None:
        area += ext_bytes(EXT_DATA_FILE,
                          data_file if isinstance(data_file, bytes)
                          else data_file.encode())
        incompat |= INCOMPAT_DATA_FILE
    if features and version >= 3:
        area += ext_bytes(EXT_FEATURES, feature_table(STD_FEATURES))
    for typ, payload in exts or []:
        area += ext_bytes(typ, payload)
    area += raw_exts
    area += b'\0' * 8                  # end marker
    bname = b''
    if backing is not None:
        bname = backing if isinstance(backing, bytes) else backing.encode()
    bfo = hlen + len(area) if backing is not None else 0
    assert hlen + len(area) + len(bname) <= cs
    l2_cover = (cs // 8) * cs
    l1_size = (size + l2_cover - 1) // l2_cover
    l1_clusters = max(1, (l1_size * 8 + cs - 1) // cs)
    nclusters = 3 + l1_clusters
    hdr = struct.pack('>IIQIIQIIQQIIQ', MAGIC, version, bfo, len(bname),
                      cluster_bits, size, 0, l1_size, 3 * cs, cs, 1, 0, 0)
    if version >= 3:
        hdr += struct.pack('>QQQII', incompat, compat, autoclear, 4, hlen)
        hdr += b'\0' * 8
    img = bytearray(nclusters * cs)
    img[0:len(hdr)] = hdr
    img[hlen:hlen + len(area)] = area
    if bname:
        img[bfo:bfo + len(bname)] = bname
    struct.pack_into('>Q', img, cs, 2 * cs)          # reftable[0]
    for i in range(nclusters):
        struct.pack_into('>H', img, 2 * cs + 2 * i, 1)
    return img


# --------------------------------------------------------- qemu helpers ----

def run(cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError('%s failed: %s' % (' '.join(cmd), r.stdout))
    return r.stdout


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for blk in iter(lambda: f.read(1 << 20), b''):
            h.update(blk)
    return h.hexdigest()


class Crafter:
    def __init__(self, outdir):
        self.out = os.path.abspath(outdir)
        self.tdir = os.path.join(self.out, '_templates')
        os.makedirs(self.tdir, exist_ok=True)
        self.cases = []
        self.names = set()
        self._tmpl = {}
        self._rawsha = {}

    # -- templates made by qemu-img/qemu-io --
    def template(self, key, size='4M', opts='', ios=(), snapshot=None,
                 bitmap=None, obj=None):
        if key in self._tmpl:
            return bytearray(self._tmpl[key])
        path = os.path.join(self.tdir, key + '.qcow2')
        cmd = ['qemu-img', 'create', '-q', '-f', 'qcow2']
        if obj:
            cmd += ['--object', obj]
        if opts:
            cmd += ['-o', opts]
        run(cmd + [path, size])
        if ios:
            cmd = ['qemu-io', '-f', 'qcow2']
            for c in ios:
                cmd += ['-c', c]
            run(cmd + [path])
        if snapshot:
            run(['qemu-img', 'snapshot', '-c', snapshot, path])
        if bitmap:
            run(['qemu-img', 'bitmap', '--add', path, bitmap])
        with open(path, 'rb') as f:
            self._tmpl[key] = f.read()
        return bytearray(self._tmpl[key])

    def raw_sha(self, key):
        """sha256 of qemu-img's raw conversion of a template."""
        if key not in self._rawsha:
            src = os.path.join(self.tdir, key + '.qcow2')
            dst = os.path.join(self.tdir, key + '.raw')
            run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', src, dst])
            self._rawsha[key] = sha256_file(dst)
            os.unlink(dst)
        return self._rawsha[key]

    # -- case registration --
    def add(self, name, data, expect, keywords=(), note='', raw_sha=None,
            files=None, main=None, names=None):
        """Register a case.

        Single-image cases pass data (bytes); multi-file cases pass files,
        {relative path: bytes}, and main, the image the commands open.
        """
        assert name not in self.names, name
        self.names.add(name)
        if files is None:
            rel = name + '.qcow2'
            self._write(rel, data)
            main_rel, all_rel = rel, [rel]
        else:
            all_rel = []
            for p, content in files.items():
                rel = os.path.join(name, p)
                self._write(rel, content)
                all_rel.append(rel)
            main_rel = os.path.join(name, main)
        if names is None:
            names = [os.path.basename(p) for p in all_rel]
        self.cases.append({
            'name': name,
            'file': main_rel,
            'files': all_rel,
            'expect': {k: sorted(v) for k, v in expect.items()},
            'keywords': list(keywords),
            'names': names,
            'raw_sha256': raw_sha,
            'note': note,
        })

    def _write(self, rel, content):
        path = os.path.join(self.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        content = bytes(content)
        blk = 65536
        zero = bytes(blk)
        with open(path, 'wb') as f:          # sparse: skip zero blocks
            for off in range(0, len(content), blk):
                chunk = content[off:off + blk]
                if chunk == zero[:len(chunk)]:
                    f.seek(len(chunk), os.SEEK_CUR)
                else:
                    f.write(chunk)
            f.truncate(len(content))

    def manifest(self):
        with open(os.path.join(self.out, 'manifest.json'), 'w') as f:
            json.dump(self.cases, f, indent=1)


# ----------------------------------------------------------- expectations --
# (a 'write' expectation, where given, is for `uqcow io -c write`: a
# writable open, which must refuse without changing the file)

def E(info, map_, convert, chain=None, write=None):
    e = {'info': set(info), 'map': set(map_), 'convert': set(convert)}
    if write is not None:
        e['write'] = set(write)
    if chain is not None:
        e['chain'] = set(chain)
    return e


REFUSE = E({'refuse'}, {'refuse'}, {'refuse'})
READ_ERROR = E({'ok'}, {'ok', 'fail'}, {'fail'})
OK = E({'ok'}, {'ok'}, {'ok'})
OK_CHAIN = E({'ok'}, {'ok'}, {'ok'}, {'ok'})
# open may refuse, or the read fails
REFUSE_OR_READ_ERROR = E({'ok', 'refuse'}, {'ok', 'fail', 'refuse'},
                         {'fail', 'refuse'})
# tolerated by a read-only open, or refused
OK_OR_REFUSE = E({'ok', 'refuse'}, {'ok', 'refuse'}, {'ok', 'refuse'})
OK_OR_READ_ERROR = E({'ok'}, {'ok', 'fail'}, {'ok', 'fail'})
# everything that opens the backing chain must refuse; plain info (which,
# like qemu-img info, need not open the backing file) may succeed
CHAIN_REFUSE = E({'ok', 'refuse'}, {'refuse'}, {'refuse'}, {'refuse'})

# malformed bitmap metadata: read-only opens go on without the bitmaps
# (guest data as qemu-img reads it), writable opens refuse
BM_DROP = dict(OK, write={'refuse'})
# bits only a writable open reads: read-only commands never look at them
BM_TABLE_BAD = dict(OK, write={'refuse'})

KW_L1 = ['l1']
KW_RT = ['refcount', 'reftable']
KW_SNAP = ['snapshot']
KW_HLEN = ['header_length', 'header length', 'header size', 'header']
KW_EXT = ['extension', 'header']
KW_BACKING = ['backing']
KW_PROTO = ['backing', 'json', 'protocol', 'plain', 'path']
KW_DATA = ['data file', 'data_file', 'data-file', 'external']
KW_DATA_PROTO = KW_DATA + ['json', 'protocol', 'plain', 'path']
KW_CHAIN = ['chain', 'depth', 'deep', 'loop', 'cycle', 'recurs', 'backing',
            'too many', 'level']
KW_TRUNC = ['header', 'truncat', 'short', 'eof', 'end of file', 'too small',
            'past', 'beyond', 'exceed', 'outside', 'l1', 'refcount',
            'length', 'size', 'read']


# ------------------------------------------------------------------ cases --

def header_cases(c):
    base = c.template('v3_64k', opts='cluster_size=65536',
                      ios=['write -P 0x11 0 64k', 'write -P 0x22 1M 4k'])
    size = len(base)

    def patched(**fields):
        d = bytearray(base)
        for k, v in fields.items():
            put(d, k, v)
        return d

    c.add('baseline_v3_64k', base, OK, raw_sha=c.raw_sha('v3_64k'),
          note='unmodified qemu-img image')

    for v in (0, 1, 4, 0xFFFFFFFF):
        c.add('version_%d' % v, patched(version=v), REFUSE, ['version'])

    for cb in (0, 8, 22, 31, 32, 63, 64, 0xFFFFFFFF):
        c.add('cluster_bits_%d' % cb, patched(cluster_bits=cb), REFUSE,
              ['cluster_bits', 'cluster bits', 'cluster size', 'cluster'])

    # iotests 080 "Huge header size" and friends
    for hl in (0, 72, 103, 105, 0x10000 + 8, 0x7FFFFFFF, 0xFFFFFFFF):
        c.add('header_length_%d' % hl, patched(header_length=hl), REFUSE,
              KW_HLEN)
    # a longer header than we know is legal: unknown fields are ignored
    d = bytearray(base)
    area = bytes(d[112:Image(d).ext_end() + 8])     # extensions + end
    d[112:4096 + len(area)] = bytes(4096 + len(area) - 112)
    d[4096:4096 + len(area)] = area
    put(d, 'header_length', 4096)
    c.add('header_length_4096', d, OK, raw_sha=c.raw_sha('v3_64k'),
          note='extensions moved behind a 4 KiB header')
    # v3 with a 104-byte header: compression_type absent
    d = bytearray(base)
    d[104:112] = b'\0' * 8          # end marker right at 104
    put(d, 'header_length', 104)
    c.add('header_length_104', d, OK, raw_sha=c.raw_sha('v3_64k'))

    for ro in (7, 64, 0xFFFFFFFF):
        c.add('refcount_order_%d' % ro, patched(refcount_order=ro), REFUSE,
              ['refcount_order', 'refcount order', 'refcount'])

    # encryption
    c.add('crypt_aes', patched(crypt_method=1), REFUSE,
          ['encrypt', 'aes', 'crypt'])
    c.add('crypt_luks_patched', patched(crypt_method=2), REFUSE,
          ['encrypt', 'luks', 'crypt'])
    c.add('crypt_method_3', patched(crypt_method=3), REFUSE,
          ['encrypt', 'crypt'])
    c.add('crypt_method_ffffffff', patched(crypt_method=0xFFFFFFFF), REFUSE,
          ['encrypt', 'crypt'])

    # virtual size
    c.add('size_2p63', patched(size=1 << 63), REFUSE, ['size', 'l1'])
    c.add('size_max', patched(size=0xFFFFFFFFFFFFFFFF), REFUSE,
          ['size', 'l1', 'overflow'])
    c.add('size_exceeds_l1', patched(size=1 << 40), REFUSE, ['size', 'l1'],
          note='one L1 entry cannot map 1 TiB')

    # L1 table (iotests 080 "Invalid L1 table", CVE-2014-0143/0144)
    c.add('l1_size_ffffffff', patched(l1_size=0xFFFFFFFF), REFUSE, KW_L1)
    c.add('l1_size_7fffffff', patched(l1_size=0x7FFFFFFF), REFUSE, KW_L1)
    c.add('l1_size_over_32M', patched(l1_size=(32 << 20) // 8 + 1,
                                      size=((32 << 20) // 8 + 1) << 29),
          REFUSE, KW_L1 + ['size'], note='L1 just above the 32 MiB cap')
    c.add('l1_size_overflow_x8', patched(l1_size=0x20000000,
                                         size=0x20000000 << 29),
          REFUSE, KW_L1 + ['size'], note='l1_size * 8 = 2^32')
    c.add('l1_offset_huge', patched(l1_table_offset=0x7FFFFFFFFFFF0000,
                                    l1_size=0xFFFF, size=0xFFFF << 29),
          REFUSE, KW_L1)
    c.add('l1_offset_misaligned', patched(l1_table_offset=0x1234567890ABCDEF,
                                          l1_size=1),
          REFUSE, KW_L1)
    c.add('l1_offset_unaligned_small', patched(l1_table_offset=0x30200),
          REFUSE, KW_L1)
    c.add('l1_past_eof',
          patched(l1_table_offset=((size + 0xFFFF) & ~0xFFFF) + 0x100000),
          REFUSE, KW_L1)
    c.add('l1_size_zero', patched(l1_size=0), REFUSE, KW_L1,
          note='L1 too small for the virtual size')
    c.add('l1_offset_2p56', patched(l1_table_offset=1 << 56), REFUSE, KW_L1)

    # refcount table (080 "Huge refcount table size", CVE-2014-0144/0145)
    c.add('reftable_clusters_ffffffff',
          patched(refcount_table_clusters=0xFFFFFFFF), REFUSE, KW_RT)
    c.add('reftable_clusters_20001',
          patched(refcount_table_clusters=0x20001), REFUSE, KW_RT)
    c.add('reftable_over_8M',
          patched(refcount_table_clusters=(8 << 20) // 65536 + 1), REFUSE,
          KW_RT)
    c.add('reftable_misaligned',
          patched(refcount_table_offset=0x1234567890ABCDEF), REFUSE, KW_RT)
    c.add('reftable_offset_huge',
          patched(refcount_table_offset=0xFFFFFFFFFFFF0000,
                  refcount_table_clusters=0x7F), REFUSE, KW_RT)
    c.add('reftable_past_eof',
          patched(refcount_table_offset=0x1000000), REFUSE, KW_RT)
    c.add('reftable_clusters_zero', patched(refcount_table_clusters=0),
          REFUSE, KW_RT, note='CVE-2014-0146 class: no refcount table')
    c.add('reftable_offset_zero', patched(refcount_table_offset=0),
          REFUSE, KW_RT, note='refcount table on top of the header')

    # snapshot table (080 "Invalid snapshot table", CVE-2014-0145/0147)
    c.add('snap_count_ffffffff', patched(nb_snapshots=0xFFFFFFFF), REFUSE,
          KW_SNAP)
    c.add('snap_count_7fffffff', patched(nb_snapshots=0x7FFFFFFF), REFUSE,
          KW_SNAP)
    c.add('snap_count_65537', patched(nb_snapshots=65537,
                                      snapshots_offset=0x10000),
          REFUSE, KW_SNAP)
    c.add('snap_offset_huge', patched(snapshots_offset=0xFFFFFFFFFFFF0000,
                                      nb_snapshots=0xFFFF), REFUSE, KW_SNAP)
    c.add('snap_offset_misaligned',
          patched(snapshots_offset=0x1234567890ABCDEF, nb_snapshots=1),
          REFUSE, KW_SNAP)
    c.add('snap_table_past_eof', patched(snapshots_offset=0x1000000,
                                         nb_snapshots=0x10000),
          REFUSE, KW_SNAP, note='080 "hitting snapshot table size limit"')
    c.add('snap_offset_zero', patched(snapshots_offset=0, nb_snapshots=1),
          OK_OR_REFUSE, KW_SNAP, note='snapshot table over the header')

    # backing file name (080 "Invalid backing file size", CVE-2014-0148)
    c.add('backing_size_ffffffff', patched(backing_file_offset=0x1000,
                                           backing_file_size=0xFFFFFFFF),
          REFUSE, KW_BACKING)
    c.add('backing_size_1024', patched(backing_file_offset=0x1000,
                                       backing_file_size=1024),
          REFUSE, KW_BACKING, note='name longer than 1023 bytes')
    c.add('backing_offset_past_cluster',
          patched(backing_file_offset=0x10000 - 4, backing_file_size=16),
          REFUSE, KW_BACKING)
    c.add('backing_offset_overflow',
          patched(backing_file_offset=0xFFFFFFFFFFFFFFF8,
                  backing_file_size=16), REFUSE, KW_BACKING)
    c.add('backing_offset_huge',
          patched(backing_file_offset=1 << 62, backing_file_size=8),
          REFUSE, KW_BACKING)

    # feature bits
    c.add('compat_unknown_bit', patched(compatible_features=1 << 5), OK,
          raw_sha=c.raw_sha('v3_64k'))
    c.add('compat_all_bits', patched(compatible_features=~1 & (2**64 - 1)),
          OK, raw_sha=c.raw_sha('v3_64k'))
    c.add('autoclear_unknown_bit', patched(autoclear_features=1 << 40), OK,
          raw_sha=c.raw_sha('v3_64k'),
          note='read-only open: the bit is left alone')
    c.add('incompat_bit63_unnamed', patched(incompatible_features=1 << 63),
          REFUSE, ['feature', 'incompatible', 'bit 63', '63'])
    c.add('corrupt_bit', patched(incompatible_features=INCOMPAT_CORRUPT),
          OK, raw_sha=c.raw_sha('v3_64k'),
          note='corrupt images open read-only, reads work')
    c.add('dirty_bit', patched(incompatible_features=INCOMPAT_DIRTY), OK,
          raw_sha=c.raw_sha('v3_64k'),
          note='dirty image opened read-only: not repaired, not written')
    c.add('compression_type_2',
          patched(compression_type=2,
                  incompatible_features=INCOMPAT_COMPRESSION),
          REFUSE, ['compression'])
    c.add('compression_type_zstd_without_bit', patched(compression_type=1),
          REFUSE, ['compression'])
    d = patched(incompatible_features=INCOMPAT_COMPRESSION)
    d[104:112] = b'\0' * 8
    put(d, 'header_length', 104)
    c.add('compression_bit_short_header', d, REFUSE,
          ['compression', 'header'])
    c.add('data_file_bit_without_ext',
          patched(incompatible_features=INCOMPAT_DATA_FILE), REFUSE, KW_DATA)

    # v2: the v3 fields do not exist; garbage there is harmless
    v2 = c.template('v2_64k', opts='compat=0.10,cluster_size=65536',
                    ios=['write -P 0x33 0 64k', 'write -P 0x44 3M 512'])
    c.add('baseline_v2', v2, OK, raw_sha=c.raw_sha('v2_64k'))
    d = bytearray(v2)
    assert d[72:80] == b'\0' * 8
    d[80:104] = b'\xa5' * 24          # compat, autoclear, order, hlen
    c.add('v2_v3_fields_garbage', d, OK, raw_sha=c.raw_sha('v2_64k'),
          note='refcount_order/header_length garbage is absent in v2')
    d = bytearray(v2)
    put(d, 'cluster_bits', 22)
    c.add('v2_cluster_bits_22', d, REFUSE, ['cluster'])

    # an AES-encrypted image made by qemu-img itself
    aes = c.template('aes', size='1M', opts='encrypt.format=aes,'
                     'encrypt.key-secret=sec0',
                     obj='secret,id=sec0,data=uqcow')
    assert get(aes, 'crypt_method') == 1
    c.add('crypt_aes_real', aes, REFUSE, ['encrypt', 'aes', 'crypt'])
    # a LUKS one by hand (qemu-img's PBKDF timing is unreliable in
    # containers): crypt_method 2, crypto extension, a LUKS header
    cs = 65536
    img = scratch(exts=[(EXT_CRYPTO, struct.pack('>QQ', 4 * cs, cs))])
    assert len(img) == 4 * cs
    img += b'LUKS\xba\xbe\x00\x01aes' + bytes(cs - 11)
    put(img, 'crypt_method', 2)
    c.add('crypt_luks', img, REFUSE, ['encrypt', 'luks', 'crypt'])
    d = bytearray(img)
    put(d, 'crypt_method', 0)
    c.add('crypto_ext_without_method', d, OK_OR_REFUSE,
          ['encrypt', 'crypt', 'extension'])


def extension_cases(c):
    base = c.template('v3_64k', opts='cluster_size=65536',
                      ios=['write -P 0x11 0 64k', 'write -P 0x22 1M 4k'])
    hl = get(base, 'header_length')

    # 080 "Huge unknown header extension"
    for bfo, tag in ((0xFFFFFFFFFFFFFFFF, 'bfo_max'), (hl + 4, 'bfo_inside'),
                     (0, 'nobacking')):
        d = bytearray(base)
        put(d, 'backing_file_offset', bfo)
        struct.pack_into('>II', d, hl, 0x12345678, 0x7FFFFFFF)
        c.add('ext_len_7fffffff_' + tag, d, REFUSE,
              KW_EXT + ['backing', 'length', 'size'])
    d = bytearray(base)
    struct.pack_into('>II', d, hl, 0x12345678, 0xFFFFFFFF)
    c.add('ext_len_ffffffff', d, REFUSE, KW_EXT + ['length', 'size'])
    d = bytearray(base)
    struct.pack_into('>II', d, hl, 0x12345678, 0x10000 - hl - 8 + 1)
    c.add('ext_len_cluster_plus1', d, REFUSE, KW_EXT + ['length', 'size'],
          note='extension ends one byte past the first cluster')
    d = bytearray(base)
    struct.pack_into('>II', d, hl, 0x12345678, 0xFFFFFFF9)
    c.add('ext_len_pad_wraps', d, REFUSE, KW_EXT + ['length', 'size'],
          note='length + 7 wraps 32 bits when padded')

    # tolerated extensions
    img = scratch(exts=[(0x12345678, b'hello')])
    c.add('ext_unknown', img, OK, note='unknown extension is skipped')
    img = scratch(exts=[(0x12345678, b''), (0xDEADBEEF, b'x' * 1000)])
    c.add('ext_unknown_two', img, OK)
    bm = c.template('bitmap', opts='cluster_size=65536',
                    ios=['write -P 0x55 0 64k'], bitmap='b0')
    c.add('bitmaps_ext', bm, OK, raw_sha=c.raw_sha('bitmap'))
    im = Image(bm)
    bmx = [e for e in im.exts() if e[0] == EXT_BITMAPS]
    assert bmx, 'qemu-img bitmap --add made no bitmaps extension'
    _, boff, _ = bmx[0]
    # bitmaps extension, bits without the autoclear bit: ignored
    d = bytearray(bm)
    put(d, 'autoclear_features', 0)
    c.add('bitmaps_ext_autoclear_clear', d, OK, raw_sha=c.raw_sha('bitmap'),
          note='bitmaps without the autoclear bit are stale and ignored')
    d = bytearray(bm)
    struct.pack_into('>I', d, boff + 4, 8)
    c.add('bitmaps_ext_bad_len', d, REFUSE, ['bitmap', 'extension'])
    d = bytearray(bm)
    struct.pack_into('>I', d, boff + 8, 65536)      # nb_bitmaps
    c.add('bitmaps_too_many', d, REFUSE, ['bitmap'])
    d = bytearray(bm)
    struct.pack_into('>Q', d, boff + 16, 1 << 40)    # directory size
    c.add('bitmaps_dir_huge', d, REFUSE, ['bitmap', 'directory'])
    d = bytearray(bm)
    struct.pack_into('>Q', d, boff + 24, 0x12345)    # directory offset
    c.add('bitmaps_dir_misaligned', d, REFUSE, ['bitmap', 'directory'])
    d = bytearray(bm)
    struct.pack_into('>Q', d, boff + 24, 1 << 50)
    c.add('bitmaps_dir_past_eof', d, REFUSE, ['bitmap', 'directory'])
    d = bytearray(bm)
    struct.pack_into('>I', d, boff + 8, 0)
    c.add('bitmaps_zero_bitmaps', d, REFUSE, ['bitmap'])

    # known extensions with bad lengths / duplicates
    good = scratch()
    c.add('backing_fmt_too_long', None, REFUSE,
          ['format', 'backing', 'extension', 'fmt'],
          files={'top.qcow2': scratch(backing='base.qcow2',
                                      backing_fmt='q' * 40),
                 'base.qcow2': good}, main='top.qcow2',
          names=['top.qcow2'])
    c.add('backing_fmt_vmdk', None, CHAIN_REFUSE,
          ['format', 'backing', 'fmt', 'vmdk'],
          files={'top.qcow2': scratch(backing='base.qcow2',
                                      backing_fmt='vmdk'),
                 'base.qcow2': good}, main='top.qcow2')
    img = scratch(raw_exts=ext_bytes(EXT_BITMAPS, b'\0' * 24) * 2,
                  autoclear=AUTOCLEAR_BITMAPS)
    c.add('bitmaps_ext_twice', img, REFUSE,
          ['bitmap', 'extension', 'duplicate', 'twice'])
    img = scratch(raw_exts=ext_bytes(EXT_FEATURES, b'\0' * 47))
    c.add('feature_table_partial_entry', img, OK_OR_REFUSE,
          ['feature', 'extension'])

    # extension table without an end marker: runs to the cluster end
    img = scratch(cluster_bits=9, features=False, size=1 << 16)
    pos = 112
    while pos + 8 <= 512:
        ln = min(56, 512 - pos - 8)
        struct.pack_into('>II', img, pos, 0x11110000 + pos, ln)
        pos += 8 + ln
    c.add('ext_no_end_marker', img, OK_OR_REFUSE, KW_EXT)

    # unknown incompatible feature, named in the feature table
    img = scratch(incompat=1 << 5,
                  exts=[(EXT_FEATURES, feature_table([(0, 5, 'frobnicate')]))],
                  features=False)
    c.add('incompat_named_frobnicate', img, REFUSE, ['frobnicate'],
          note='message must name the feature: '
               '"unknown incompatible feature: frobnicate"')
    img = scratch(incompat=(1 << 9) | (1 << 20),
                  exts=[(EXT_FEATURES,
                         feature_table(STD_FEATURES +
                                       [(0, 20, 'quuxification')]))],
                  features=False)
    c.add('incompat_named_bit20', img, REFUSE, ['quuxification', 'bit 9'],
          note='two unknown bits, one named')
    img = scratch(incompat=1 << 5, features=True)
    c.add('incompat_unnamed_bit5', img, REFUSE,
          ['feature', 'incompatible', 'bit 5'])
    # feature name not NUL-terminated within 46 bytes
    img = scratch(incompat=1 << 6,
                  exts=[(EXT_FEATURES, struct.pack('>BB', 0, 6) + b'Z' * 46)],
                  features=False)
    c.add('incompat_name_unterminated', img, REFUSE,
          ['zzzz', 'feature', 'incompatible'])

    # extension overlapping the backing file name
    img = scratch(backing='base.qcow2',
                  exts=[(0x12345678, b'y' * 24)], features=False)
    bfo = get(img, 'backing_file_offset')
    put(img, 'backing_file_offset', bfo - 16)
    c.add('ext_overlaps_backing_name', img, REFUSE,
          KW_EXT + ['backing', 'overlap'])

    # data file extension
    img = scratch(data_file=b'x' * 1024)
    c.add('data_file_name_1024', img, REFUSE, KW_DATA + ['name', 'long'])


def bitmap_dir_cases(c):
    """Bitmap directory and table entries (qcow2.txt "Bitmaps"): each field
    out of range, checked before use."""
    key = 'bitmap_dirty'
    path = os.path.join(c.tdir, key + '.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', path, '4M'])
    run(['qemu-img', 'bitmap', '--add', path, 'b0'])
    run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x66 0 64k', '-c', 'write 1M 4k', path])
    with open(path, 'rb') as f:
        c._tmpl[key] = f.read()
    base = bytearray(c._tmpl[key])
    sha = c.raw_sha(key)
    im = Image(base)
    _, boff, _ = [e for e in im.exts() if e[0] == EXT_BITMAPS][0]
    nb, _, dsize, doff = struct.unpack_from('>IIQQ', base, boff + 8)
    assert nb == 1 and dsize == 32, (nb, dsize)
    toff, tsize = struct.unpack_from('>QI', base, doff)
    dent, = struct.unpack_from('>Q', base, toff)
    assert dent, 'qemu-io left no bitmap data cluster'
    kw = ['bitmap']

    def entry(name, fmt, at, value, expect=BM_DROP, note=''):
        d = bytearray(base)
        struct.pack_into(fmt, d, doff + at, value)
        c.add(name, d, expect, kw, raw_sha=sha, note=note)

    entry('bm_name_size_0', '>H', 18, 0)
    entry('bm_name_size_1024', '>H', 18, 1024)
    entry('bm_name_size_past_dir', '>H', 18, 9)
    entry('bm_gran_bits_8', '>B', 17, 8)
    entry('bm_gran_bits_32', '>B', 17, 32)
    entry('bm_gran_bits_63', '>B', 17, 63)
    entry('bm_type_0', '>B', 16, 0)
    entry('bm_type_2', '>B', 16, 2)
    entry('bm_flags_extra_compat', '>I', 12, 2 | 4,
          note='extra_data_compatible: QEMU refuses any flag but in_use/auto')
    entry('bm_flags_reserved', '>I', 12, 2 | (1 << 31))
    entry('bm_extra_data', '>I', 20, 8)
    entry('bm_extra_data_huge', '>I', 20, 0xFFFFFFF0)
    entry('bm_table_size_0', '>I', 8, 0)
    entry('bm_table_size_huge', '>I', 8, 0x8000001)
    entry('bm_table_size_max', '>I', 8, 0x8000000,
          note='table size at the limit but past the end of the file')
    entry('bm_table_size_wrong', '>I', 8, 2,
          note='a consistent bitmap must fit the virtual size exactly')
    entry('bm_table_offset_0', '>Q', 0, 0)
    entry('bm_table_misaligned', '>Q', 0, toff + 512)
    entry('bm_table_past_eof', '>Q', 0, 1 << 40)
    entry('bm_table_offset_wraps', '>Q', 0, 0xFFFFFFFFFFFF0000)
    # in use: a stale size is allowed (qemu: not saved after a resize)
    d = bytearray(base)
    struct.pack_into('>II', d, doff + 8, 2, 3)
    c.add('bm_in_use_stale_size', d, OK, raw_sha=sha,
          note='an in-use bitmap may have the wrong size: tolerated')
    # directory vs extension
    d = bytearray(base)
    struct.pack_into('>I', d, boff + 8, 2)
    c.add('bm_nb_more_than_dir', d, BM_DROP, kw, raw_sha=sha)
    d = bytearray(base) + bytes(32)       # qemu ends the file at the directory
    struct.pack_into('>Q', d, boff + 16, 64)
    c.add('bm_dir_trailing_bytes', d, BM_DROP, kw, raw_sha=sha)
    d = bytearray(base)
    struct.pack_into('>Q', d, boff + 16, 16)
    c.add('bm_dir_short', d, BM_DROP, kw, raw_sha=sha)
    d = bytearray(base)
    d[doff + 32:doff + 64] = d[doff:doff + 32]
    struct.pack_into('>IIQ', d, boff + 8, 2, 0, 64)
    c.add('bm_dup_name', d, BM_DROP, kw + ['twice', 'duplicate'], raw_sha=sha)
    d = bytearray(base)
    d[doff + 24] = 0
    c.add('bm_name_nul', d, BM_DROP, kw, raw_sha=sha)
    # bitmap table entries: read only when a writable open loads the bits
    for name, val in (('bm_entry_reserved_low', dent | 2),
                      ('bm_entry_reserved_high', dent | (1 << 60)),
                      ('bm_entry_all_ones_with_offset', dent | 1),
                      ('bm_entry_misaligned', dent + 512),
                      ('bm_entry_past_eof', 1 << 45)):
        d = bytearray(base)
        struct.pack_into('>Q', d, toff, val)
        c.add(name, d, BM_TABLE_BAD, kw, raw_sha=sha)
    # an all-ones entry is valid: a writable open accepts it (not run here:
    # it writes), read-only commands too
    d = bytearray(base)
    struct.pack_into('>Q', d, toff, 1)
    c.add('bm_entry_all_ones', d, OK, raw_sha=sha)


def l1l2_cases(c):
    key = 'v3_64k'
    base = c.template(key, opts='cluster_size=65536',
                      ios=['write -P 0x11 0 64k', 'write -P 0x22 1M 4k'])
    im = Image(base)
    l1e = im.l1(0)
    l2 = im.l2_off(0)
    kw = ['l1', 'l2']

    def l1(v):
        d = bytearray(base)
        struct.pack_into('>Q', d, im.l1_off, v)
        return d

    c.add('l1e_reserved_low', l1(l1e | 0x2), REFUSE_OR_READ_ERROR, kw)
    c.add('l1e_reserved_high', l1(l1e | (1 << 60)), REFUSE_OR_READ_ERROR, kw)
    c.add('l1e_misaligned', l1(OFLAG_COPIED | (l2 + 0x2A00)),
          REFUSE_OR_READ_ERROR, kw, note='060 "unaligned L1 entry"')
    c.add('l1e_beyond_2p56', l1(OFLAG_COPIED | 0x00FFFFFFFFFF0000 | (1 << 56)),
          REFUSE_OR_READ_ERROR, kw)
    c.add('l1e_past_eof', l1(OFLAG_COPIED | 0x00000FFFFFFF0000),
          REFUSE_OR_READ_ERROR, kw)
    c.add('l1e_garbage', l1(0x2A2A2A2A), REFUSE_OR_READ_ERROR, kw)
    c.add('l1e_points_to_l1', l1(OFLAG_COPIED | im.l1_off),
          E({'ok', 'refuse'}, {'ok', 'fail', 'refuse'},
            {'ok', 'fail', 'refuse'}), kw,
          note='060: L2 table on top of the L1 table (read-only)')

    def l2e(v, idx=0):
        d = Image(base)
        d.set_l2(idx, v)
        return d.data

    data0 = im.l2(0) & L2_OFFSET_MASK
    c.add('l2e_misaligned', l2e(OFLAG_COPIED | (data0 + 0x2A00)), READ_ERROR,
          note='060 "unaligned L2 entry"')
    c.add('l2e_reserved_low', l2e(im.l2(0) | 0x10), READ_ERROR)
    c.add('l2e_reserved_high', l2e(im.l2(0) | (1 << 58)), READ_ERROR)
    c.add('l2e_huge_offset_reserved', l2e(0xBFFFFFFFFFFF0000), READ_ERROR,
          note='080 "invalid L2 entry (huge physical offset)"')
    c.add('l2e_past_eof', l2e(0x800000FFFFFF0000), OK_OR_READ_ERROR,
          note='080: huge but representable offset')
    c.add('l2e_zero_misaligned', l2e(OFLAG_COPIED | (data0 + 0x2A00) | 1),
          OK_OR_READ_ERROR, note='060 "unaligned pre-allocated zero cluster"')
    c.add('l2e_on_reftable', l2e(OFLAG_COPIED | im.rt_off),
          OK_OR_READ_ERROR, note='060: data cluster over refcount metadata')

    # v2: no zero flag
    v2 = c.template('v2_64k', opts='compat=0.10,cluster_size=65536',
                    ios=['write -P 0x33 0 64k', 'write -P 0x44 3M 512'])
    d = Image(v2)
    d.set_l2(0, d.l2(0) | 1)
    c.add('v2_l2e_zero_flag', d.data, READ_ERROR)

    # other cluster sizes
    c512 = c.template('c512', opts='cluster_size=512',
                      ios=['write -P 0x66 0 4k', 'write -P 0x77 2M 512'])
    c.add('baseline_c512', c512, OK, raw_sha=c.raw_sha('c512'))
    d = Image(c512)
    d.set_l2(0, OFLAG_COPIED | ((d.l2(0) & L2_OFFSET_MASK) + 0x100))
    c.add('c512_l2e_reserved_bit8', d.data, READ_ERROR)
    c2m = c.template('c2m', opts='cluster_size=2M',
                     ios=['write -P 0x66 0 4k', 'write -P 0x77 3M 512'])
    c.add('baseline_c2m', c2m, OK, raw_sha=c.raw_sha('c2m'))
    d = Image(c2m)
    d.set_l2(0, OFLAG_COPIED | ((d.l2(0) & L2_OFFSET_MASK) + 0x10000))
    c.add('c2m_l2e_misaligned', d.data, READ_ERROR)
    d = Image(c2m)
    struct.pack_into('>Q', d.data, d.l1_off, OFLAG_COPIED | 0x1000)
    c.add('c2m_l1e_misaligned', d.data, REFUSE_OR_READ_ERROR, kw)

    for rb in (1, 64):
        k = 'rc%d' % rb
        t = c.template(k, opts='refcount_bits=%d' % rb,
                       ios=['write -P 0x12 64k 64k'])
        c.add('baseline_refcount_bits_%d' % rb, t, OK, raw_sha=c.raw_sha(k))

    # extended L2
    x = c.template('extl2', opts='extended_l2=on,cluster_size=65536',
                   ios=['write -P 0x21 0 4k', 'write -P 0x22 64k 64k'])
    c.add('baseline_extl2', x, OK, raw_sha=c.raw_sha('extl2'))
    xi = Image(x)
    eoff = xi.l2_entry_off(0)
    d = bytearray(x)
    bmp = struct.unpack_from('>Q', d, eoff + 8)[0]
    struct.pack_into('>Q', d, eoff + 8, bmp | (bmp << 32))
    c.add('extl2_alloc_and_zero', d, READ_ERROR,
          note='subcluster both allocated and zero')
    d = bytearray(x)
    struct.pack_into('>Q', d, eoff, 0)
    c.add('extl2_alloc_no_offset', d, READ_ERROR,
          note='allocated subclusters without a host offset')
    d = bytearray(x)
    struct.pack_into('>Q', d, eoff, OFLAG_COPIED |
                     ((struct.unpack_from('>Q', d, eoff)[0] & L2_OFFSET_MASK)
                      + 0x800))
    c.add('extl2_misaligned', d, READ_ERROR)
    d = bytearray(x)
    put(d, 'cluster_bits', 13)
    put(d, 'l1_size', 1)
    c.add('extl2_cluster_bits_13', d, REFUSE,
          ['extended', 'l2', 'cluster'],
          note='extended L2 needs clusters of at least 16 KiB')


def compressed_cases(c):
    for ct in ('zlib', 'zstd'):
        key = 'comp_' + ct
        t = c.template(key, opts='compression_type=%s' % ct,
                       ios=['write -c -P 0x5a 0 64k',
                            'write -P 0x13 128k 64k'])
        c.add('baseline_compressed_' + ct, t, OK, raw_sha=c.raw_sha(key))
        im = Image(t)
        ent = im.l2(0)
        assert ent & OFLAG_COMPRESSED, 'qemu-io did not compress'
        coff, span = im.compressed(ent)

        d = bytearray(t)
        d[coff:coff + span] = b'\xff' * span
        c.add('comp_%s_garbage_ff' % ct, d, READ_ERROR)
        d = bytearray(t)
        rnd = random.Random(4467)
        d[coff:coff + span] = bytes(rnd.randrange(256) for _ in range(span))
        c.add('comp_%s_garbage_random' % ct, d, READ_ERROR)
        d = bytearray(t)
        d[coff:coff + span] = b'\0' * span
        c.add('comp_%s_garbage_zero' % ct, d, READ_ERROR)

        im2 = Image(t)
        past = (len(t) + (1 << 20)) & ~511
        im2.set_l2(0, im2.compressed_entry(past, 512))
        c.add('comp_%s_offset_past_eof' % ct, im2.data, READ_ERROR)

        im2 = Image(t)
        shift = im2.csize_shift()
        maxsec = (1 << (im2.cluster_bits - 8)) - 1
        im2.set_l2(0, OFLAG_COMPRESSED | (maxsec << shift) | coff)
        c.add('comp_%s_span_past_eof' % ct, im2.data, OK_OR_READ_ERROR,
              note='060: compressed cluster size beyond EOF')

        # hand-made streams appended at the end of the file
        def with_stream(stream):
            im3 = Image(t)
            off = (len(im3.data) + 511) & ~511
            im3.data.extend(b'\0' * (off - len(im3.data)))
            im3.data.extend(stream)
            im3.data.extend(b'\0' * ((-len(im3.data)) % 512))
            im3.set_l2(0, im3.compressed_entry(off, len(stream)))
            return im3.data

        if ct == 'zlib':
            co = zlib.compressobj(9, zlib.DEFLATED, -12)
            short = co.compress(b'A' * 100) + co.flush()
            co = zlib.compressobj(9, zlib.DEFLATED, -12)
            bomb = co.compress(b'\0' * (4 << 20)) + co.flush()
            # a stored, non-final block of 4 KiB, then nothing valid
            trunc = (b'\0' + struct.pack('<HH', 4096, 4096 ^ 0xFFFF) +
                     b'B' * 4096)
        else:
            # zstd frames built by hand: no checksum, no content size,
            # window descriptor 0x58 (2 MiB)
            magic = struct.pack('<IBB', 0xFD2FB528, 0x00, 0x58)

            def block(last, btype, size, payload):
                hv = (1 if last else 0) | (btype << 1) | (size << 3)
                return struct.pack('<I', hv)[:3] + payload
            short = magic + block(True, 0, 100, b'A' * 100)
            # 32 RLE blocks of 128 KiB: 4 MiB from a few bytes
            bomb = magic + b''.join(block(i == 31, 1, 128 << 10, b'\0')
                                    for i in range(32))
            # a raw block that is not the last one: the frame never ends
            trunc = magic + block(False, 0, 4096, b'B' * 4096)
        c.add('comp_%s_short_output' % ct, with_stream(short), READ_ERROR,
              note='stream inflates to less than a cluster')
        c.add('comp_%s_truncated_stream' % ct, with_stream(trunc),
              READ_ERROR, note='stream ends before a cluster is produced')
        c.add('comp_%s_bomb' % ct, with_stream(bomb), OK_OR_READ_ERROR,
              note='stream inflates to 4 MiB; output must stay bounded')


def snapshot_cases(c):
    key = 'snap'
    t = c.template(key, opts='cluster_size=65536',
                   ios=['write -P 0x31 0 64k'], snapshot='s1')
    c.add('baseline_snapshot', t, OK, raw_sha=c.raw_sha(key))
    im = Image(t)
    (so,) = im.snapshots()

    def snap(fmt, rel, v):
        d = bytearray(t)
        struct.pack_into(fmt, d, so + rel, v)
        return d

    c.add('snap_l1_misaligned', snap('>Q', 0, 0x400200), OK_OR_REFUSE,
          KW_SNAP + KW_L1, note='080 "invalid snapshot L1 table offset"')
    c.add('snap_l1_past_eof', snap('>Q', 0, 0x7FFF0000), OK_OR_REFUSE,
          KW_SNAP + KW_L1)
    c.add('snap_l1_size_huge', snap('>I', 8, 0x10000000), OK_OR_REFUSE,
          KW_SNAP + KW_L1, note='080 "invalid snapshot L1 table size"')
    c.add('snap_l1_size_ffffffff', snap('>I', 8, 0xFFFFFFFF), OK_OR_REFUSE,
          KW_SNAP + KW_L1, note='CVE-2014-0143 class')
    c.add('snap_extra_ffffffff', snap('>I', 36, 0xFFFFFFFF), REFUSE,
          KW_SNAP + ['extra'])
    c.add('snap_extra_1025', snap('>I', 36, 1025), REFUSE,
          KW_SNAP + ['extra'])
    c.add('snap_extra_zero_v3', snap('>I', 36, 0), OK_OR_REFUSE,
          KW_SNAP + ['extra'])
    c.add('snap_name_len_ffff', snap('>H', 14, 0xFFFF), REFUSE,
          KW_SNAP + ['name'])
    c.add('snap_id_len_ffff', snap('>H', 12, 0xFFFF), REFUSE,
          KW_SNAP + ['id'])
    d = bytearray(t)
    put(d, 'nb_snapshots', 2)
    c.add('snap_count_one_too_many', d, REFUSE, KW_SNAP,
          note='second entry lies past the end of the file')
    d = bytearray(t)
    put(d, 'l1_size', 0)
    c.add('l1_size_zero_with_snapshot', d, REFUSE, KW_L1,
          note='080 "invalid L1 table (with internal snapshot)"')
    d = bytearray(t[:so + 20])
    c.add('snap_table_cut', d, REFUSE, KW_SNAP + KW_TRUNC)


def truncation_cases(c):
    base = c.template('v3_64k', opts='cluster_size=65536',
                      ios=['write -P 0x11 0 64k', 'write -P 0x22 1M 4k'])
    for n in range(0, 121):
        if n < 4:
            exp = OK_OR_REFUSE    # no magic: probed as raw
        else:
            exp = REFUSE
        c.add('trunc_%03d' % n, base[:n], exp, KW_TRUNC + ['magic'])
    v2 = c.template('v2_64k', opts='compat=0.10,cluster_size=65536',
                    ios=['write -P 0x33 0 64k', 'write -P 0x44 3M 512'])
    for n in (4, 20, 48, 71, 72, 80):
        c.add('trunc_v2_%03d' % n, v2[:n], REFUSE, KW_TRUNC)

    big = c.template('c512_1g', size='1G', opts='cluster_size=512')
    im = Image(big)
    cut = im.l1_off + im.l1_size * 8 // 2 + 4
    assert cut < len(big)
    c.add('trunc_mid_l1', big[:cut], REFUSE, KW_L1 + KW_TRUNC,
          note='file ends in the middle of a 256 KiB L1 table')
    c.add('trunc_mid_reftable', big[:im.rt_off + 100], REFUSE,
          KW_RT + KW_L1 + KW_TRUNC)
    c.add('trunc_after_header_cluster', base[:65536], REFUSE,
          KW_RT + KW_L1 + KW_TRUNC)
    c.add('trunc_mid_data', base[:len(base) - 3000], OK_OR_READ_ERROR,
          note='last data cluster cut short')


def backing_cases(c):
    good = bytes(scratch())
    raw = b'\0' * 65536

    # protocol and json: backing names; each one also exists as a regular
    # file (with a '//' collapsing into a directory), so an engine that
    # passed the name to open() would succeed instead of refusing
    protos = [
        ('json', 'json:{"driver":"qcow2","file":{"driver":"file",'
                 '"filename":"base.qcow2"}}'),
        ('json_null', 'json:{"driver":"null-co"}'),
        ('nbd_url', 'nbd://localhost:10809/export'),
        ('nbd_old', 'nbd:localhost:10809'),
        ('nbd_unix', 'nbd+unix:///export?socket=nbd.sock'),
        ('file_prefix', 'file:base.qcow2'),
        ('http', 'http://example.com/base.qcow2'),
        ('https', 'https://example.com/base.qcow2'),
        ('ssh', 'ssh://host/base.qcow2'),
        ('null_co', 'null-co://'),
        ('blkdebug', 'blkdebug::base.qcow2'),
        ('host_device', 'host_device:base.qcow2'),
    ]
    for tag, name in protos:
        files = {'top.qcow2': scratch(backing=name), 'base.qcow2': good}
        if not name.endswith('/'):
            rel = os.path.normpath(name)
            if not rel.startswith('..'):
                files[rel] = good
        c.add('backing_proto_' + tag, None, REFUSE, KW_PROTO, files=files,
              main='top.qcow2', names=['top.qcow2'],
              note='backing name %r must not be used as a protocol spec'
                   % name)

    for tag, name in [('json', 'json:{"driver":"raw","file":{"driver":'
                               '"file","filename":"data.raw"}}'),
                      ('nbd', 'nbd://localhost/data'),
                      ('file_prefix', 'file:data.raw')]:
        files = {'top.qcow2': scratch(data_file=name), 'data.raw': raw}
        rel = os.path.normpath(name)
        files[rel] = raw
        c.add('data_file_proto_' + tag, None, REFUSE, KW_DATA_PROTO,
              files=files, main='top.qcow2', names=['top.qcow2'])

    # a valid external data file, made by qemu-img
    dd = tempfile.mkdtemp(dir=c.tdir)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
         'data_file=ext.raw', 'ext.qcow2', '1M'], cwd=dd)
    run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x61 0 64k', 'ext.qcow2'],
        cwd=dd)
    files = {}
    for n in ('ext.qcow2', 'ext.raw'):
        with open(os.path.join(dd, n), 'rb') as f:
            files[n] = f.read()
    c.add('data_file_valid', None, OK, files=files, main='ext.qcow2')
    files = {'ext.qcow2': files['ext.qcow2']}
    c.add('data_file_missing', None, REFUSE, KW_DATA + ['no such file'],
          files=files, main='ext.qcow2', names=['ext.qcow2', 'ext.raw'])

    # missing backing file
    c.add('backing_missing', None, E({'ok', 'refuse'}, {'refuse'},
                                     {'refuse'}, {'refuse'}),
          KW_BACKING + ['no such file', 'nope.qcow2'],
          files={'top.qcow2': scratch(backing='nope.qcow2')},
          main='top.qcow2', names=['top.qcow2', 'nope.qcow2'])
    # a newline in the backing name must not split the message
    c.add('backing_name_newline', None,
          E({'ok', 'refuse'}, {'refuse'}, {'refuse'}, {'refuse'}),
          KW_BACKING + ['no such file'],
          files={'top.qcow2': scratch(backing='a\nb.qcow2')},
          main='top.qcow2', names=['top.qcow2'])
    c.add('backing_name_nul', None, CHAIN_REFUSE,
          KW_BACKING + ['no such file'],
          files={'top.qcow2': scratch(backing=b'base\0.qcow2'),
                 'base': good},
          main='top.qcow2', names=['top.qcow2'],
          note='NUL inside the name: refuse, never open "base"')
    c.add('backing_name_1023', None,
          E({'ok', 'refuse'}, {'refuse'}, {'refuse'}, {'refuse'}),
          KW_BACKING + ['no such file', 'long'],
          files={'top.qcow2': scratch(backing='n' * 1023)},
          main='top.qcow2', names=['top.qcow2', 'n' * 1023])
    # hostile backing image behind a valid one
    bad = bytearray(good)
    put(bad, 'cluster_bits', 40)
    c.add('backing_hostile', None, CHAIN_REFUSE,
          ['cluster', 'backing'],
          files={'top.qcow2': scratch(backing='base.qcow2'),
                 'base.qcow2': bad},
          main='top.qcow2')

    # loops
    c.add('chain_self', None, CHAIN_REFUSE, KW_CHAIN,
          files={'self.qcow2': scratch(backing='self.qcow2')},
          main='self.qcow2')
    c.add('chain_self_dotslash', None, CHAIN_REFUSE, KW_CHAIN,
          files={'self.qcow2': scratch(backing='./sub/../self.qcow2'),
                 'sub/keep.raw': b''},
          main='self.qcow2')
    c.add('chain_loop2', None, CHAIN_REFUSE, KW_CHAIN,
          files={'a.qcow2': scratch(backing='b.qcow2'),
                 'b.qcow2': scratch(backing='a.qcow2')},
          main='a.qcow2')
    c.add('chain_loop3', None, CHAIN_REFUSE, KW_CHAIN,
          files={'a.qcow2': scratch(backing='b.qcow2'),
                 'b.qcow2': scratch(backing='c.qcow2'),
                 'c.qcow2': scratch(backing='a.qcow2')},
          main='a.qcow2')
    c.add('chain_loop_tail', None, CHAIN_REFUSE, KW_CHAIN,
          files={'top.qcow2': scratch(backing='a.qcow2'),
                 'a.qcow2': scratch(backing='b.qcow2'),
                 'b.qcow2': scratch(backing='a.qcow2')},
          main='top.qcow2')

    # depth
    def chain(n):
        files = {}
        for i in range(n):
            nxt = 'l%03d.qcow2' % (i + 1) if i + 1 < n else None
            files['l%03d.qcow2' % i] = scratch(size=1 << 16, cluster_bits=12,
                                               backing=nxt)
        return files
    c.add('chain_depth_20', None, OK_CHAIN, files=chain(20),
          main='l000.qcow2')
    c.add('chain_depth_70', None, CHAIN_REFUSE, KW_CHAIN, files=chain(70),
          main='l000.qcow2')

    # a real chain made by qemu-img: data must come through
    dd = tempfile.mkdtemp(dir=c.tdir)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', '1M'],
        cwd=dd)
    run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x71 0 128k',
         'base.qcow2'], cwd=dd)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2',
         '-F', 'qcow2', 'mid.qcow2'], cwd=dd)
    run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x72 64k 64k',
         'mid.qcow2'], cwd=dd)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2',
         '-F', 'qcow2', 'top.qcow2'], cwd=dd)
    run(['qemu-img', 'convert', '-O', 'raw', 'top.qcow2', 'top.raw'], cwd=dd)
    files = {}
    for n in ('base.qcow2', 'mid.qcow2', 'top.qcow2'):
        with open(os.path.join(dd, n), 'rb') as f:
            files[n] = f.read()
    c.add('chain_qemu_3', None, OK_CHAIN, files=files, main='top.qcow2',
          raw_sha=sha256_file(os.path.join(dd, 'top.raw')))


def generate(outdir):
    """Craft every case into outdir; return the manifest (list of dicts)."""
    if os.path.isdir(outdir) and os.listdir(outdir):
        if not os.path.exists(os.path.join(outdir, 'manifest.json')):
            raise SystemExit('craft: %s is not empty and holds no '
                             'manifest.json; not overwriting it' % outdir)
        shutil.rmtree(outdir)       # an earlier run's output
    os.makedirs(outdir, exist_ok=True)
    c = Crafter(outdir)
    header_cases(c)
    extension_cases(c)
    bitmap_dir_cases(c)
    l1l2_cases(c)
    compressed_cases(c)
    snapshot_cases(c)
    truncation_cases(c)
    backing_cases(c)
    c.manifest()
    shutil.rmtree(c.tdir)
    return c.cases


def main(argv):
    if len(argv) != 2 or argv[1].startswith('-'):
        print('usage: craft.py OUTDIR', file=sys.stderr)
        return 2
    cases = generate(argv[1])
    print('craft: %d cases in %s' % (len(cases), argv[1]))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
