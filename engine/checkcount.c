// SPDX-License-Identifier: MIT
/* Counting for the check: real references to every host cluster from the
 * metadata walk, compared with the stored refcounts; overlaps judged. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "walk.h"
#include "stats.h"

/* ---- counting ---- */

/* One more real reference to every cluster of [off, off+size), qemu's way:
 * a region may end less than a cluster past the end of the file (a last
 * cluster written short), anything further is a corruption. */
int ck_ref(struct ck *ck, uint64_t off, uint64_t size)
{
	uint64_t max = uq_refcount_max(ck->img->g.refcount_order);
	uint32_t cb = ck->img->g.cluster_bits;
	uint64_t first, last;

	if (!size)
		return 0;
	if (off > UINT64_MAX - size ||
	    (off + size > ck->file_size && off + size - ck->file_size >= ck->cs)) {
		ck_msg(ck, "ERROR: counting reference for region exceeding the end of the "
		       "file by one cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
		       off, size);
		ck->res->corruptions++;
		return 0;
	}
	first = off >> cb;
	last = (off + size - 1) >> cb;
	if (last >= ck->nb) {
		if (ck_grow(ck, last + 1) < 0) {
			ck->res->check_errors++;
			return uq_seterr(-ENOMEM, "out of memory counting references");
		}
		ck->nb = last + 1;
	}
	for (uint64_t c = first; c <= last; c++) {
		uint64_t v = ck_count(ck, c);

		if (v == max) {
			ck_msg(ck, "ERROR: overflow cluster offset=0x%" PRIx64, c << cb);
			ck_msg(ck, "Use uqcow amend to increase the refcount entry width or "
			       "uqcow convert to create a clean copy if the image cannot be "
			       "opened for writing");
			ck->res->corruptions++;
			if (c < ck->cap)
				ck->kind[c] |= K_OVERFLOW;
			continue;
		}
		if (ck_count_set(ck, c, v + 1) < 0) {
			ck->res->check_errors++;
			return uq_seterr(-ENOMEM, "out of memory counting references");
		}
	}
	return 0;
}

/* ---- the walk: L1 and L2 tables ---- */

/* qemu's classification of a raw L2 entry; the zero flag means nothing
 * with extended L2 (and is flagged as a reserved bit there and on v2). */
enum ck_ctype ck_classify(const struct uq_geom *g, uint64_t e)
{
	uint64_t off = e & QCOW_L2E_OFFSET_MASK;

	if (e & QCOW_OFLAG_COMPRESSED)
		return CT_COMPRESSED;
	if ((e & QCOW_OFLAG_ZERO) && !g->extended_l2)
		return off ? CT_ZERO_ALLOC : CT_ZERO_PLAIN;
	if (!off)
		/* 0 is a real offset in an external data file, which always
		 * has refcount 1, so COPIED tells the two apart */
		return g->external_data && (e & QCOW_OFLAG_COPIED) ? CT_NORMAL : CT_UNALLOC;
	return CT_NORMAL;
}

#define SC_ALLOC_ALL 0x00000000ffffffffull
#define SC_ZERO_ALL  0xffffffff00000000ull

static void walk_compressed(struct ck *ck, uint64_t e, uint64_t bm, uint64_t i, bool active)
{
	const struct uq_geom *g = &ck->img->g;
	uint64_t coff, csize;

	if (e & QCOW_OFLAG_COPIED) {
		ck_msg(ck, "ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for "
		       "compressed clusters", e & g->coffset_mask);
		e &= ~QCOW_OFLAG_COPIED;
		ck->res->corruptions++;
	}
	if (g->external_data) {
		ck_msg(ck, "ERROR compressed cluster %" PRIu64 " with data file, entry=0x%"
		       PRIx64, i, e);
		ck->res->corruptions++;
		return;
	}
	if (bm) {
		ck_msg(ck, "ERROR compressed cluster %" PRIu64 " with non-zero subcluster "
		       "allocation bitmap, entry=0x%" PRIx64, i, e);
		ck->res->corruptions++;
		return;
	}
	coff = e & g->coffset_mask;
	csize = (((e >> g->csize_shift) & g->csize_mask) + 1) * 512 - (coff & 511);
	if (ck_ref(ck, coff, csize) == 0)
		ck_mark(ck, coff, csize, UQ_MK_COMPRESSED);
	if (active) {
		ck->res->allocated_clusters++;
		ck->res->compressed_clusters++;
		ck->res->fragmented_clusters++;
	}
}

/* A preallocated zero cluster at an unaligned offset holds nothing worth
 * keeping: make it a plain zero cluster. 0 when repaired. */
static int fix_unaligned_zero(struct ck *ck, uint8_t *tab, uint64_t l2_off, uint64_t i)
{
	const struct uq_geom *g = &ck->img->g;
	uint8_t *p = tab + i * g->l2_entry_bytes;
	int ret;

	if (g->extended_l2) {
		uint64_t bm = uq_be64(p + 8);

		uq_put_be64(p, 0);
		uq_put_be64(p + 8, (bm | bm << 32) & SC_ZERO_ALL);
	} else {
		uq_put_be64(p, QCOW_OFLAG_ZERO);
	}
	if (ck_conflicts(ck, l2_off, ck->cs)) {
		ck_msg(ck, "ERROR: Overlap check failed");
		ck->res->check_errors++;
		return -EIO;
	}
	ret = ck_write_l2_entry(ck, l2_off, i, p);
	if (ret < 0) {
		ck_msg(ck, "ERROR: Failed to overwrite L2 table entry: %s", strerror(-ret));
		ck->res->check_errors++;
		return ret;
	}
	ck->res->corruptions--;
	ck->res->corruptions_fixed++;
	return 0;
}

static int walk_l2(struct ck *ck, uint8_t *tab, uint64_t l2_off, bool active, unsigned fix)
{
	const struct uq_geom *g = &ck->img->g;
	/* bit 0 is reserved where it can't be the zero flag */
	uint64_t reserved = QCOW_L2E_STD_RESERVED |
			    (!g->v3 || g->extended_l2 ? QCOW_OFLAG_ZERO : 0);
	uint64_t next_contiguous = 0;
	int ret = 0;

	for (uint64_t i = 0; i < g->l2_entries && ret == 0; i++) {
		const uint8_t *p = tab + i * g->l2_entry_bytes;
		uint64_t e = uq_be64(p), bm = g->extended_l2 ? uq_be64(p + 8) : 0;
		uint64_t off = e & QCOW_L2E_OFFSET_MASK;
		enum ck_ctype t;

		if (!e && !bm)
			continue;       /* most entries of a sparse image */
		t = ck_classify(g, e);
		if (t == CT_COMPRESSED) {
			walk_compressed(ck, e, bm, i, active);
			continue;
		}
		if (e & reserved) {
			ck_msg(ck, "ERROR found l2 entry with reserved bits set: %" PRIx64, e);
			ck->res->corruptions++;
		}
		if (t == CT_UNALLOC) {
			if (bm & SC_ALLOC_ALL) {
				ck_msg(ck, "ERROR: Unallocated cluster has non-zero subcluster "
				       "allocation map");
				ck->res->corruptions++;
			}
			continue;
		}
		if (t == CT_ZERO_PLAIN)
			continue;
		if ((bm >> 32) & bm) {
			ck_msg(ck, "ERROR offset=%" PRIx64 ": Allocated cluster has corrupted "
			       "subcluster allocation bitmap", off);
			ck->res->corruptions++;
		}
		if (off & (ck->cs - 1)) {
			bool data = g->extended_l2 ? (bm & SC_ALLOC_ALL) != 0
						   : !(e & QCOW_OFLAG_ZERO);

			ck->res->corruptions++;
			if (!data) {
				ck_msg(ck, "%s offset=%" PRIx64 ": Preallocated cluster is not "
				       "properly aligned; L2 entry corrupted.",
				       fix & UQ_CHECK_REPAIR_ERRORS ? "Repairing" : "ERROR", off);
				if ((fix & UQ_CHECK_REPAIR_ERRORS) &&
				    fix_unaligned_zero(ck, tab, l2_off, i) == 0)
					continue;
			} else {
				ck_msg(ck, "ERROR offset=%" PRIx64 ": Data cluster is not properly "
				       "aligned; L2 entry corrupted.", off);
			}
		}
		if (active) {
			ck->res->allocated_clusters++;
			if (next_contiguous && off != next_contiguous)
				ck->res->fragmented_clusters++;
			next_contiguous = off + ck->cs;
		}
		if (!g->external_data) {
			ret = ck_ref(ck, off, ck->cs);
			if (ret == 0)
				ret = ck_mark(ck, off, ck->cs, UQ_MK_DATA);
		}
	}
	return ret;
}

/* The counting walk: every region is a reference, checked as qemu does. */
struct calc {
	struct ck *ck;
	unsigned fix;
};

static int calc_region(struct uq_walk *w, enum uq_mkind k, uint64_t off, uint64_t len)
{
	struct ck *ck = ((struct calc *)w->arg)->ck;
	int ret = ck_ref(ck, off, len);

	if (ret == 0 && k == UQ_MK_L2 && (off & (ck->cs - 1))) {
		ck_msg(ck, "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; "
		       "L1 entry corrupted", off);
		ck->res->corruptions++;
	}
	return ret;
}

static int calc_l1_entry(struct uq_walk *w, uint32_t idx, uint64_t e)
{
	struct ck *ck = ((struct calc *)w->arg)->ck;

	(void)idx;
	if (e & QCOW_L1E_RESERVED) {
		ck_msg(ck, "ERROR found L1 entry with reserved bits set: %" PRIx64, e);
		ck->res->corruptions++;
	}
	return 0;
}

static int calc_l2_table(struct uq_walk *w, uint64_t l2_off, uint8_t *tab)
{
	struct calc *c = w->arg;
	int ret = walk_l2(c->ck, tab, l2_off, w->snap < 0, c->fix);

	ck_work(c->ck, 1);
	return ret;
}

static int calc_bad(struct uq_walk *w, enum uq_mkind k, uint64_t off, int err)
{
	struct ck *ck = ((struct calc *)w->arg)->ck;

	(void)off;
	if (k == UQ_MK_L1 || k == UQ_MK_L2) {
		ck_msg(ck, "ERROR: I/O error in check_refcounts_%s", k == UQ_MK_L1 ? "l1" : "l2");
		ck->res->check_errors++;
		return err;
	}
	ck->bm_bad++;             /* a bitmap structure */
	return 0;
}

/* Refcount blocks: each must be referenced exactly once (by the table). */
static int calc_refblock(struct uq_walk *w, uint64_t i, uint64_t raw)
{
	struct calc *cl = w->arg;
	struct ck *ck = cl->ck;
	uint64_t off = raw & QCOW_REFT_OFFSET_MASK;
	uint64_t c = off >> ck->img->g.cluster_bits;
	int ret;

	if (raw & QCOW_REFT_RESERVED) {
		ck_msg(ck, "ERROR refcount table entry %" PRIu64 " has reserved bits set", i);
		ck->res->corruptions++;
		ck->rebuild = true;
		return 0;
	}
	if (off & (ck->cs - 1)) {
		ck_msg(ck, "ERROR refcount block %" PRIu64 " is not cluster aligned; "
		       "refcount table entry corrupted", i);
		ck->res->corruptions++;
		ck->rebuild = true;
		return 0;
	}
	if (c >= ck->nb) {
		/* qemu grows the file to reach it; a rebuild drops it instead */
		ck_msg(ck, "%s refcount block %" PRIu64 " is outside image",
		       cl->fix & UQ_CHECK_REPAIR_ERRORS ? "Repairing" : "ERROR", i);
		ck->res->corruptions++;
		ck->outside = true;
		if (cl->fix & UQ_CHECK_REPAIR_ERRORS)
			ck->rebuild = true;
		return 0;
	}
	if (!off)
		return 0;
	ret = ck_ref(ck, off, ck->cs);
	if (ret < 0)
		return ret;
	if (ck_count(ck, c) != 1) {
		ck_msg(ck, "ERROR refcount block %" PRIu64 " refcount=%" PRIu64, i,
		       ck_count(ck, c));
		ck->res->corruptions++;
		ck->rebuild = true;
	}
	return 0;
}

/* Messages qemu prints between stages of its walk. */
static int calc_stage(struct uq_walk *w, enum uq_mkind k)
{
	struct ck *ck = ((struct calc *)w->arg)->ck;
	uq_image *img = ck->img;

	if (k == UQ_MK_L1 && w->snap == 0 && img->g.external_data) {
		ck_msg(ck, "ERROR %u snapshots in image with data file", img->snap.n);
		ck->res->corruptions++;
	}
	if (k == UQ_MK_REFBLOCK && ck->bm_bad) {
		ck_msg(ck, "ERROR %" PRIu64 " corrupt bitmap directory or table entries",
		       ck->bm_bad);
		ck->res->corruptions += ck->bm_bad;
	}
	return 0;
}

/* Real references to every cluster, in qemu's order (its messages come
 * out in the same order): header, active L1/L2, snapshots, snapshot
 * table, refcount table, bitmaps, refcount blocks. */
int ck_calculate(struct ck *ck, unsigned fix)
{
	struct uq_check_result *res = ck->res;
	struct calc c = { .ck = ck, .fix = fix };
	struct uq_walk w = { .img = ck->img, .what = UQ_WALK_ALL, .reftable = ck->rt,
			     .reftable_n = ck->rt_n, .region = calc_region,
			     .stage = calc_stage, .l1_entry = calc_l1_entry,
			     .l2_table = calc_l2_table, .refblock = calc_refblock,
			     .bad = calc_bad, .arg = &c };
	int ret;

	ck_counts_clear(ck);
	ck->rebuild = ck->outside = false;
	ck->bm_bad = 0;
	res->allocated_clusters = res->fragmented_clusters = res->compressed_clusters = 0;
	ret = uq_walk(&w);
	if (ret == -ENOMEM)
		res->check_errors++;
	return ret;
}

/* ---- compare with the stored refcounts ---- */

static int add_diff(struct ck *ck, uint64_t c, uint64_t stored, bool unknown)
{
	if (ck->ndiff == ck->diff_cap) {
		size_t ncap = ck->diff_cap ? ck->diff_cap * 2 : 64;
		struct ck_diff *d = realloc(ck->diff, ncap * sizeof(*d));

		if (!d)
			return -ENOMEM;
		ck->diff = d;
		ck->diff_cap = ncap;
	}
	ck->diff[ck->ndiff++] = (struct ck_diff){ c, stored, unknown };
	return 0;
}

/* Clusters past the compared range: straight from the refcount block. */
static int stored_from_disk(struct ck *ck, uint64_t c, uint64_t *val)
{
	uq_image *img = ck->img;
	uint64_t idx = c >> img->g.rb_bits, off;
	uint8_t *blk;
	int ret;

	*val = 0;
	if (idx >= ck->rt_n || !(ck->rt[idx] & QCOW_REFT_OFFSET_MASK))
		return 0;
	if (!ck_rt_usable(ck, ck->rt[idx], &off))
		return -EIO;
	/* corrupt entries pointing past the end tend to come in runs */
	if (!ck->far || ck->far_off != off) {
		blk = ck->far ? ck->far : malloc((size_t)ck->cs);
		if (!blk)
			return -ENOMEM;
		ck->far = blk;
		ck->far_off = 0;
		ret = uq_meta_pread(img, UQ_MK_REFBLOCK, blk, (size_t)ck->cs, off);
		if (ret < 0)
			return ret;
		ck->far_off = off;
	}
	*val = uq_refcount_get(ck->far, img->g.refcount_order,
			       c & ((1ull << img->g.rb_bits) - 1));
	return 0;
}

int ck_stored(struct ck *ck, uint64_t c, uint64_t *val)
{
	size_t lo = 0, hi = ck->ndiff;

	if (c >= ck->nb)
		return stored_from_disk(ck, c, val);
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ck->diff[mid].cluster < c)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < ck->ndiff && ck->diff[lo].cluster == c) {
		*val = ck->diff[lo].stored;
		return ck->diff[lo].unknown ? -EIO : 0;
	}
	*val = ck_count(ck, c);
	return 0;
}

/* One cluster whose stored refcount s differs from the real count r. */
static int compare_one(struct ck *ck, unsigned fix, uint64_t c, uint64_t s, uint64_t r)
{
	uint64_t *fixed = NULL;

	if (s == 0)
		ck->rebuild = true;      /* maybe a lost block: rebuild, don't patch */
	else if (s > r && (fix & UQ_CHECK_REPAIR_LEAKS))
		fixed = &ck->res->leaks_fixed;
	else if (s < r && (fix & UQ_CHECK_REPAIR_ERRORS))
		fixed = &ck->res->corruptions_fixed;
	ck_msg(ck, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
	       fixed ? "Repairing" : s < r ? "ERROR" : "Leaked", c, s, r);
	if (fixed && ck_fix_refcount(ck, c, s, r) == 0) {
		(*fixed)++;
		return 0;
	}
	if (s < r)
		ck->res->corruptions++;
	else
		ck->res->leaks++;
	return add_diff(ck, c, s, false);
}

/* Stored against real refcounts for every cluster of the file; with fix,
 * leaks are lowered and low refcounts raised in place where a block
 * exists (a refcount of 0 may mean a lost block: that needs a rebuild). */
int ck_compare(struct ck *ck, unsigned fix, uint64_t *highest)
{
	uq_image *img = ck->img;
	uint64_t per = 1ull << img->g.rb_bits, nblocks = (ck->nb + per - 1) / per;
	uint64_t *offs = calloc(nblocks ? nblocks : 1, sizeof(*offs));
	struct uq_treader rd = { 0 };
	size_t n = 0;
	int ret;

	*highest = 0;
	ck->ndiff = 0;
	if (!offs) {
		ck->res->check_errors++;
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < nblocks && i < ck->rt_n; i++)
		if (ck_rt_usable(ck, ck->rt[i], &offs[n]))
			n++;
	ret = uq_treader_init(&rd, img, UQ_MK_REFBLOCK, offs, n);
	for (uint64_t i = 0; ret == 0 && i < nblocks; i++) {
		uint64_t first = i * per, end = first + per < ck->nb ? first + per : ck->nb;
		uint64_t off = 0;
		uint8_t *blk = NULL;
		bool unknown = false;

		if (i < ck->rt_n && (ck->rt[i] & QCOW_REFT_OFFSET_MASK)) {
			if (!ck_rt_usable(ck, ck->rt[i], &off))
				unknown = true;     /* unaligned: the block can't be read */
			else if (uq_treader_next(&rd, &blk) < 0)
				unknown = true;
			ck_work(ck, 1);
		}
		for (uint64_t c = first; ret == 0 && c < end; c++) {
			uint64_t s, r = ck_count(ck, c);

			if (unknown) {
				ck_msg(ck, "Can't get refcount for cluster %" PRIu64 ": %s", c,
				       strerror(EIO));
				ck->res->check_errors++;
				ret = add_diff(ck, c, 0, true);
				continue;
			}
			s = blk ? uq_refcount_get(blk, img->g.refcount_order, c - first) : 0;
			if (s || r)
				*highest = c;
			if (s != r)
				ret = compare_one(ck, fix, c, s, r);
		}
	}
	uq_treader_free(&rd);
	free(offs);
	if (ret == 0 && fix)
		ret = ck_write_refcounts(ck);
	if (ret < 0)
		ck->res->check_errors++;
	return ret;
}

/* The active L1 table is written in place whatever its refcount, so a
 * snapshot's L1 table in the same cluster changes with it: the next
 * write's new L2 shows up in the snapshot too (found by image_ops: a
 * repair set the refcount to 2, the image checked clean, and one write
 * left clusters referenced twice with refcount 1). Same kind, so no
 * overlap was recorded; the count tells: the active walk counts each of
 * its clusters once. No repair can fix it (qemu's can't either). */
static void report_shared_active_l1(struct ck *ck)
{
	const uq_image *img = ck->img;
	uint32_t cb = img->g.cluster_bits;
	uint64_t off = img->h.l1_table_offset, len = (uint64_t)img->h.l1_size * 8;

	if (!len || off > UINT64_MAX - len)
		return;
	for (uint64_t c = off >> cb; c <= (off + len - 1) >> cb && c < ck->nb; c++) {
		if ((ck->kind[c] & (K_MASK | K_SHARED)) != UQ_MK_L1 || ck_count(ck, c) < 2)
			continue;
		ck_msg(ck, "ERROR cluster %" PRIu64 " is used as the active L1 table "
		       "and as a snapshot's L1 table", c);
		ck->res->corruptions++;
	}
}

/* Clusters used twice. Copy-on-write keeps shared L2 tables and data
 * consistent as long as the refcount counts every user, so those are
 * reported only when the compare found their refcount wrong; a cluster
 * that is also header, L1, refcount or snapshot metadata (written in
 * place whatever its refcount) is a corruption even with a right count. */
void ck_report_overlaps(struct ck *ck)
{
	for (size_t i = 0; i < ck->nov; i++) {
		const struct ck_overlap *o = &ck->ov[i];
		bool in_place = ck_kind_in_place(o->a) || ck_kind_in_place(o->b);
		uint64_t s;
		bool known = ck_stored(ck, o->cluster, &s) == 0;
		bool right = known && s == ck_count(ck, o->cluster);

		if (!in_place && right)
			continue;
		ck_msg(ck, "ERROR cluster %" PRIu64 " is used as %s and as %s",
		       o->cluster, uq_mkind_name(o->a), uq_mkind_name(o->b));
		/* Counted already: a refcount too low (the compare), one it
		 * couldn't read (a check error), an overflow. A refcount too
		 * high was only a leak: fixing it must not turn the overlap
		 * into a corruption the check didn't count before. */
		if (in_place && known && s >= ck_count(ck, o->cluster) &&
		    !(ck->kind[o->cluster] & K_OVERFLOW))
			ck->res->corruptions++;
	}
	report_shared_active_l1(ck);
}

