// SPDX-License-Identifier: MIT
/* The crash suite's own reference count: qcow2 metadata walked from the raw
 * bytes (docs/interop/qcow2.txt, counted as qemu-img check counts). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refwalk.h"

/* Field masks, from the format specification. */
#define L1_OFFSET      0x00fffffffffffe00ull   /* bits 9..55 */
#define L1_RESERVED    0x7f000000000001ffull   /* bits 0..8, 56..62 */
#define L2_OFFSET      0x00fffffffffffe00ull
#define L2_RESERVED    0x3f000000000001feull   /* bits 1..8, 56..61 */
#define L2_ZERO        (1ull << 0)
#define L2_COMPRESSED  (1ull << 62)
#define COPIED         (1ull << 63)
#define RT_OFFSET      0xfffffffffffffe00ull   /* bits 9..63 */
#define RT_RESERVED    0x00000000000001ffull
#define BT_OFFSET      0x00fffffffffffe00ull   /* bitmap table entries */

#define INCOMPAT_DIRTY    (1ull << 0)
#define INCOMPAT_DATAFILE (1ull << 2)
#define INCOMPAT_EXTL2    (1ull << 4)
#define AUTOCLEAR_BITMAPS (1ull << 0)

#define EXT_BITMAPS    0x23852875u
#define EXT_CRYPTO     0x0537be77u

/* Limits qemu sets; beyond them a field is garbage, not a table to walk. */
#define MAX_L1_ENTRIES    ((32ull << 20) / 8)     /* 32 MiB L1 table */
#define MAX_REFTABLE      (8ull << 20)            /* 8 MiB refcount table */
#define MAX_SNAPSHOTS     65536u
#define MAX_BITMAPS       65535u

struct walk {
	const uint8_t *f;
	uint64_t len;
	uint32_t cb;            /* cluster_bits */
	uint64_t cs;            /* cluster size */
	bool v3, extl2, datafile;
	uint64_t n;             /* clusters counted */
	uint64_t *refs;
	struct rw_result *out;
};

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void problem(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct walk *w, const char *fmt, ...)
{
	va_list ap;

	if (w->out->nproblems++)
		return;
	va_start(ap, fmt);
	vsnprintf(w->out->problem, sizeof(w->out->problem), fmt, ap);
	va_end(ap);
}

/* [off, off + bytes) lies inside the file: the bytes there, else NULL. */
static const uint8_t *at(const struct walk *w, uint64_t off, uint64_t bytes)
{
	if (off > w->len || bytes > w->len - off)
		return NULL;
	return w->f + off;
}

static bool aligned(const struct walk *w, uint64_t off)
{
	return (off & (w->cs - 1)) == 0;
}

/* One reference to every cluster [off, off + bytes) touches. As qemu-img
 * check: a region may end less than a cluster past the end of the file (a
 * last cluster written short), anything further is not counted. */
static void ref(struct walk *w, uint64_t off, uint64_t bytes, const char *what)
{
	if (!bytes)
		return;
	if (off > UINT64_MAX - bytes ||
	    (off + bytes > w->len && off + bytes - w->len >= w->cs)) {
		problem(w, "%s at 0x%llx+0x%llx lies past the end of the file (0x%llx)", what,
			(unsigned long long)off, (unsigned long long)bytes,
			(unsigned long long)w->len);
		return;
	}
	for (uint64_t c = off >> w->cb; c <= (off + bytes - 1) >> w->cb; c++)
		w->refs[c]++;   /* c < n: see refwalk() */
}

/* ---- guest clusters: L1 and L2 tables ---- */

static void walk_compressed(struct walk *w, uint64_t e, uint64_t l2_off)
{
	/* x = 62 - (cluster_bits - 8): the offset below bit x, then the count
	 * of 512-byte sectors after the first one */
	uint32_t x = 62 - (w->cb - 8);
	uint64_t off = e & ((1ull << x) - 1);
	uint64_t sectors = ((e >> x) & ((1ull << (w->cb - 8)) - 1)) + 1;

	if (w->datafile) {
		problem(w, "L2 table 0x%llx: a compressed cluster with an external data file",
			(unsigned long long)l2_off);
		return;
	}
	if (off >> 56) {
		problem(w, "L2 table 0x%llx: compressed cluster offset 0x%llx is not below 2^56",
			(unsigned long long)l2_off, (unsigned long long)off);
		return;
	}
	/* the data runs from off to the end of its last sector: each host
	 * cluster it touches gets one reference (qemu_parse_compressed_l2_entry) */
	ref(w, off, sectors * 512 - (off & 511), "compressed cluster");
}

static void walk_l2(struct walk *w, uint64_t l2_off)
{
	uint64_t esize = w->extl2 ? 16 : 8;
	const uint8_t *t = at(w, l2_off, w->cs);

	if (!t) {
		problem(w, "L2 table 0x%llx lies past the end of the file",
			(unsigned long long)l2_off);
		return;
	}
	for (uint64_t i = 0; i < w->cs / esize; i++) {
		uint64_t e = be64(t + i * esize);
		uint64_t bm = w->extl2 ? be64(t + i * esize + 8) : 0;
		uint64_t host = e & L2_OFFSET;

		if (e & L2_COMPRESSED) {
			walk_compressed(w, e, l2_off);
			continue;
		}
		if (e & L2_RESERVED) {
			problem(w, "L2 table 0x%llx entry %llu: 0x%016llx has reserved bits set",
				(unsigned long long)l2_off, (unsigned long long)i,
				(unsigned long long)e);
			continue;
		}
		if ((e & L2_ZERO) && (w->extl2 || !w->v3))
			problem(w, "L2 table 0x%llx entry %llu: the zero flag is reserved %s",
				(unsigned long long)l2_off, (unsigned long long)i,
				w->extl2 ? "with extended L2 entries" : "in a v2 image");
		if (w->extl2 && ((uint32_t)bm & (uint32_t)(bm >> 32)))
			problem(w, "L2 table 0x%llx entry %llu: subclusters both allocated and zero",
				(unsigned long long)l2_off, (unsigned long long)i);
		if (!aligned(w, host)) {
			problem(w, "L2 table 0x%llx entry %llu: host offset 0x%llx is not cluster "
				"aligned", (unsigned long long)l2_off, (unsigned long long)i,
				(unsigned long long)host);
			continue;
		}
		/* normal and zero-with-allocation clusters alike hold their host
		 * cluster; an external data file's clusters have no refcount */
		if (host && !w->datafile)
			ref(w, host, w->cs, "data cluster");
	}
}

/* An L1 table and everything it reaches. A table shared by several L1
 * tables is walked once per L1 entry pointing at it, as its data clusters
 * carry one reference per L1 table that reaches them. */
static void walk_l1(struct walk *w, uint64_t l1_off, uint64_t entries, const char *what)
{
	const uint8_t *t;

	if (!entries)
		return;
	if (!aligned(w, l1_off) || entries > MAX_L1_ENTRIES) {
		problem(w, "%s at 0x%llx (%llu entries) is misaligned or too large", what,
			(unsigned long long)l1_off, (unsigned long long)entries);
		return;
	}
	ref(w, l1_off, entries * 8, what);
	t = at(w, l1_off, entries * 8);
	if (!t) {
		problem(w, "%s at 0x%llx lies past the end of the file", what,
			(unsigned long long)l1_off);
		return;
	}
	for (uint64_t i = 0; i < entries; i++) {
		uint64_t e = be64(t + 8 * i), l2 = e & L1_OFFSET;

		if (e & L1_RESERVED) {
			problem(w, "%s entry %llu: 0x%016llx has reserved bits set", what,
				(unsigned long long)i, (unsigned long long)e);
			continue;
		}
		if (!l2)
			continue;
		if (!aligned(w, l2)) {
			problem(w, "%s entry %llu: L2 offset 0x%llx is not cluster aligned", what,
				(unsigned long long)i, (unsigned long long)l2);
			continue;
		}
		ref(w, l2, w->cs, "L2 table");
		walk_l2(w, l2);
	}
}

/* ---- snapshots, refcount structures, bitmaps ---- */

static void walk_snapshots(struct walk *w, uint32_t nb, uint64_t off)
{
	uint64_t pos = off;

	if (!nb)
		return;
	if (!aligned(w, off) || nb > MAX_SNAPSHOTS) {
		problem(w, "snapshot table at 0x%llx (%u snapshots) is misaligned or too large",
			(unsigned long long)off, nb);
		return;
	}
	for (uint32_t i = 0; i < nb; i++) {
		/* entries start 8-aligned: fixed part, extra data, ID, name */
		const uint8_t *e;
		uint64_t size;

		pos = (pos + 7) & ~7ull;
		e = at(w, pos, 40);
		if (!e) {
			problem(w, "snapshot %u's entry at 0x%llx lies past the end of the file", i,
				(unsigned long long)pos);
			break;
		}
		size = 40 + (uint64_t)be32(e + 36) + be16(e + 12) + be16(e + 14);
		if (!at(w, pos, size)) {
			problem(w, "snapshot %u's entry at 0x%llx+0x%llx lies past the end of the "
				"file", i, (unsigned long long)pos, (unsigned long long)size);
			break;
		}
		walk_l1(w, be64(e), be32(e + 8), "snapshot L1 table");
		pos += size;
	}
	ref(w, off, pos - off, "snapshot table");
}

static void walk_refcount_structures(struct walk *w, uint64_t rt_off, uint32_t rt_clusters)
{
	uint64_t bytes = (uint64_t)rt_clusters << w->cb;
	const uint8_t *t;

	if (!aligned(w, rt_off) || bytes > MAX_REFTABLE) {
		problem(w, "refcount table at 0x%llx (%u clusters) is misaligned or too large",
			(unsigned long long)rt_off, rt_clusters);
		return;
	}
	ref(w, rt_off, bytes, "refcount table");
	t = at(w, rt_off, bytes);
	if (!t) {
		problem(w, "refcount table at 0x%llx lies past the end of the file",
			(unsigned long long)rt_off);
		return;
	}
	for (uint64_t i = 0; i < bytes / 8; i++) {
		uint64_t e = be64(t + 8 * i), blk = e & RT_OFFSET;

		if (e & RT_RESERVED)
			problem(w, "refcount table entry %llu: 0x%016llx has reserved bits set",
				(unsigned long long)i, (unsigned long long)e);
		if (!blk)
			continue;
		if (!aligned(w, blk) || blk >= w->len) {
			problem(w, "refcount block %llu at 0x%llx is %s", (unsigned long long)i,
				(unsigned long long)blk,
				aligned(w, blk) ? "past the end of the file" : "misaligned");
			continue;
		}
		ref(w, blk, w->cs, "refcount block");
	}
}

static void walk_bitmaps(struct walk *w, uint32_t nb, uint64_t dir_size, uint64_t dir_off)
{
	const uint8_t *d = at(w, dir_off, dir_size);
	uint64_t pos = 0;

	if (!aligned(w, dir_off) || nb > MAX_BITMAPS || !d) {
		problem(w, "bitmap directory at 0x%llx+0x%llx (%u bitmaps) is misaligned, too "
			"large or past the end of the file", (unsigned long long)dir_off,
			(unsigned long long)dir_size, nb);
		return;
	}
	ref(w, dir_off, dir_size, "bitmap directory");
	for (uint32_t i = 0; i < nb; i++) {
		uint64_t toff, tsize, size;
		const uint8_t *t;

		if (dir_size < 24 || pos > dir_size - 24) {
			problem(w, "bitmap %u's directory entry runs past the directory", i);
			return;
		}
		toff = be64(d + pos);
		tsize = be32(d + pos + 8);
		size = (24 + (uint64_t)be32(d + pos + 20) + be16(d + pos + 18) + 7) & ~7ull;
		pos += size;
		if (!aligned(w, toff) || !(t = at(w, toff, tsize * 8))) {
			problem(w, "bitmap %u's table at 0x%llx is misaligned or past the end of "
				"the file", i, (unsigned long long)toff);
			continue;
		}
		ref(w, toff, tsize * 8, "bitmap table");
		for (uint64_t j = 0; j < tsize; j++) {
			uint64_t data = be64(t + 8 * j) & BT_OFFSET;

			/* 0: the cluster reads as all zeros or all ones (bit 0) */
			if (!data)
				continue;
			if (!aligned(w, data)) {
				problem(w, "bitmap %u table entry %llu: 0x%llx is misaligned", i,
					(unsigned long long)j, (unsigned long long)data);
				continue;
			}
			ref(w, data, w->cs, "bitmap data");
		}
	}
}

/* The header extensions that reference clusters: bitmaps, and the full
 * disk encryption header. They live in the first cluster with the header
 * (qemu reads nothing else there), so that cluster is their reference. */
static void walk_extensions(struct walk *w, uint64_t pos, uint64_t autoclear)
{
	uint64_t end = w->cs < w->len ? w->cs : w->len;

	while (pos + 8 <= end) {
		uint32_t type = be32(w->f + pos), elen = be32(w->f + pos + 4);
		const uint8_t *x = w->f + pos + 8;

		if (type == 0)
			return;
		if (elen > end - pos - 8) {
			problem(w, "header extension 0x%08x at 0x%llx runs past the first cluster",
				type, (unsigned long long)pos);
			return;
		}
		if (type == EXT_BITMAPS && elen >= 24 && (autoclear & AUTOCLEAR_BITMAPS))
			walk_bitmaps(w, be32(x), be64(x + 8), be64(x + 16));
		else if (type == EXT_CRYPTO && elen >= 16)
			ref(w, be64(x), be64(x + 8), "encryption header");
		pos += 8 + (((uint64_t)elen + 7) & ~7ull);
	}
}

/* ---- stored refcounts ---- */

/* Byte off of the file; a block the file ends inside reads zeros past
 * the end, as a read of the file would. */
static uint8_t byte_at(const struct walk *w, uint64_t off)
{
	return off < w->len ? w->f[off] : 0;
}

/* Entry j of the refcount block at blk, of width 1 << order. Widths under
 * a byte pack from the least significant bit; wider ones are big-endian. */
static uint64_t rc_entry(const struct walk *w, uint64_t blk, uint32_t order, uint64_t j)
{
	uint32_t bits = 1u << order;
	uint64_t v = 0;

	if (bits < 8)
		return (byte_at(w, blk + j * bits / 8) >> (j * bits % 8)) & ((1u << bits) - 1);
	for (uint32_t k = 0; k < bits / 8; k++)
		v = v << 8 | byte_at(w, blk + j * (bits / 8) + k);
	return v;
}

/* The stored refcount of cluster c; false if its block can't be read. */
static bool stored(const struct walk *w, const uint8_t *rt, uint64_t rt_entries, uint32_t order,
		   uint64_t c, uint64_t *v)
{
	uint32_t rb_bits = w->cb + 3 - order;   /* entries per block: cs * 8 / width */
	uint64_t i = c >> rb_bits, blk;

	*v = 0;
	if (i >= rt_entries)
		return true;    /* beyond the table: no block, refcount 0 */
	blk = be64(rt + 8 * i) & RT_OFFSET;
	if (!blk)
		return true;
	if (!aligned(w, blk) || blk >= w->len)
		return false;
	*v = rc_entry(w, blk, order, c & ((1ull << rb_bits) - 1));
	return true;
}

/* ---- the walk ---- */

int refwalk(const uint8_t *file, uint64_t len, struct rw_result *out)
{
	struct walk w = { .f = file, .len = len, .out = out };
	uint32_t version, order = 4, hlen = 72;
	uint64_t incompat = 0, autoclear = 0, rt_off, rt_entries;
	const uint8_t *rt;

	memset(out, 0, sizeof(*out));
	if (len < 72 || memcmp(file, "QFI\xfb", 4)) {
		snprintf(out->problem, sizeof(out->problem), "no qcow2 magic");
		return -EINVAL;
	}
	version = be32(file + 4);
	w.cb = be32(file + 20);
	if (version == 3 && len >= 104) {
		incompat = be64(file + 72);
		autoclear = be64(file + 88);
		order = be32(file + 96);
		hlen = be32(file + 100);
	}
	if ((version != 2 && version != 3) || w.cb < 9 || w.cb > 21 || order > 6 ||
	    (version == 3 && (hlen < 104 || hlen > (1u << w.cb)))) {
		snprintf(out->problem, sizeof(out->problem), "header: version %u, cluster_bits "
			 "%u, refcount_order %u, header_length %u: not one to walk", version, w.cb,
			 order, hlen);
		return -EINVAL;
	}
	w.cs = 1ull << w.cb;
	w.v3 = version == 3;
	w.extl2 = incompat & INCOMPAT_EXTL2;
	w.datafile = incompat & INCOMPAT_DATAFILE;
	out->cluster_bits = w.cb;
	out->refcount_bits = 1u << order;
	out->dirty = incompat & INCOMPAT_DIRTY;
	/* the file, and one cluster past it that ref() lets a region reach */
	w.n = (len + w.cs - 1) / w.cs + 1;
	w.refs = calloc(w.n, sizeof(*w.refs));
	if (!w.refs)
		return -ENOMEM;

	ref(&w, 0, w.cs, "header");
	walk_extensions(&w, hlen, autoclear);
	walk_l1(&w, be64(file + 40), be32(file + 36), "active L1 table");
	walk_snapshots(&w, be32(file + 60), be64(file + 64));
	walk_refcount_structures(&w, be64(file + 48), be32(file + 56));

	/* a refcount table that can't be read leaves every refcount unknown */
	rt_off = be64(file + 48);
	rt_entries = ((uint64_t)be32(file + 56) << w.cb) / 8;
	rt = aligned(&w, rt_off) && rt_entries * 8 <= MAX_REFTABLE ?
	     at(&w, rt_off, rt_entries * 8) : NULL;
	out->nclusters = w.n;
	for (uint64_t c = 0; c < w.n; c++) {
		uint64_t v = 0;
		bool known = rt && stored(&w, rt, rt_entries, order, c, &v);
		struct rw_diff *d;

		if (known ? v == w.refs[c] : !w.refs[c])
			continue;
		if (!(out->ndiff & (out->ndiff + 1))) {   /* 0, 1, 3, 7, ...: grow */
			d = realloc(out->diff, (2 * out->ndiff + 1) * sizeof(*d));
			if (!d) {
				free(w.refs);
				refwalk_free(out);
				return -ENOMEM;
			}
			out->diff = d;
		}
		out->diff[out->ndiff++] = (struct rw_diff){ .cluster = c, .refs = w.refs[c],
							    .stored = v, .unknown = !known };
	}
	free(w.refs);
	return 0;
}

void refwalk_free(struct rw_result *r)
{
	free(r->diff);
	r->diff = NULL;
	r->ndiff = 0;
}
