// SPDX-License-Identifier: MIT
/* Snapshot refcounts: raising or lowering what an L1 table reaches (with
 * an exact rollback), and recomputing the COPIED flags afterwards. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "overlap.h"
#include "snapshot.h"
#include "walk.h"
#include "stats.h"

static uint64_t cs(const uq_image *img) { return img->g.cluster_size; }

struct walk {
	uq_image *img;
	int delta;
	uint64_t limit;   /* updates to make at most: a rollback replays a prefix */
	uint64_t done;
	const uint64_t *other;   /* references here at the same place cancel out */
	uint32_t other_n;
	uint8_t *otab;
};

/* 1 when the limit is reached (stop, not an error). */
static int ref_one(struct walk *w, uint64_t cluster, bool l2)
{
	uq_image *img = w->img;
	uint64_t v;
	int ret;

	if (w->done == w->limit)
		return 1;
	ret = uq_rc_get(img, cluster, &v);
	if (ret < 0)
		return ret;
	/* a reference to a free cluster: adding to it would create a refcount
	 * block and hide the damage; the image needs a repair first */
	if (w->delta > 0 && v == 0)
		return uq_seterr(-EUCLEAN, "%s: cluster 0x%llx is in use but has refcount 0; "
				 "repair the image first (check -r all)", img->path,
				 (unsigned long long)(cluster << img->g.cluster_bits));
	ret = uq_rc_add(img, cluster, w->delta);
	if (ret < 0)
		return uq_seterr(ret, "%s: %s", img->path, uq_errmsg());
	w->done++;
	if (w->delta < 0 && v == 1 && l2) {
		/* a freed table may come back as data: forget it was a table */
		uq_meta_del(img, cluster << img->g.cluster_bits, cs(img));
		l2c_invalidate(img->l2c, cluster << img->g.cluster_bits);
	}
	return 0;
}

static int decode_at(const uq_image *img, const uint8_t *tab, uint64_t i, struct uq_l2map *m)
{
	const struct uq_geom *g = &img->g;
	const uint8_t *e = tab + i * g->l2_entry_bytes;

	return uq_l2_decode(g, uq_be64(e), g->extended_l2 ? uq_be64(e + 8) : 0, m);
}

/* Do two mappings hold references to exactly the same clusters? */
static bool same_refs(const struct uq_l2map *a, const struct uq_l2map *b)
{
	if ((a->type == UQ_C_COMPRESSED) != (b->type == UQ_C_COMPRESSED))
		return false;
	if (a->type == UQ_C_COMPRESSED)
		return a->comp_off == b->comp_off && a->comp_len == b->comp_len;
	return a->host_off == b->host_off;
}

/* The other table's L2 table at the same L1 index, or 0. */
static uint64_t other_l2(const struct walk *r, uint32_t i)
{
	uint64_t o2 = 0;
	bool copied;

	if (i >= r->other_n || uq_l1_decode(&r->img->g, r->other[i], &o2, &copied) < 0)
		return 0;
	return o2;
}

/* One table in both: everything under it keeps its count. Entries that
 * don't decode are visited, for ref_l1_entry to refuse. */
static bool ref_want(struct uq_walk *w, uint32_t i, uint64_t raw)
{
	uint64_t l2;
	bool copied;

	if (uq_l1_decode(&w->img->g, raw, &l2, &copied) < 0)
		return true;
	return l2 && l2 != other_l2(w->arg, i);
}

static int ref_l1_entry(struct uq_walk *w, uint32_t i, uint64_t raw)
{
	uint64_t l2;
	bool copied;
	int ret = uq_l1_decode(&w->img->g, raw, &l2, &copied);

	if (ret < 0)
		return uq_seterr(ret, "%s: L1 entry %u: %s", w->img->path, i, uq_errmsg());
	return 0;
}

static int ref_region(struct uq_walk *w, enum uq_mkind k, uint64_t off, uint64_t len)
{
	(void)len;
	if (k == UQ_MK_L2)
		return ref_one(w->arg, off >> w->img->g.cluster_bits, true);
	return 0;   /* the L1 table itself is the caller's */
}

/* What one L2 table's entries reference; entries that reference what the
 * other table's entry at the same index does are skipped (their count
 * doesn't change overall). */
static int ref_l2_table(struct uq_walk *w, uint64_t l2_off, uint8_t *tab)
{
	struct walk *r = w->arg;
	uq_image *img = r->img;
	const struct uq_geom *g = &img->g;
	uint64_t o_off = other_l2(r, w->l1_idx);
	int ret = 0;

	if (o_off && (ret = uq_meta_pread(img, UQ_MK_L2, r->otab, cs(img), o_off)) < 0)
		return uq_seterr(ret, "%s: reading an L2 table failed", img->path);
	for (uint64_t i = 0; ret == 0 && i < g->l2_entries; i++) {
		struct uq_l2map m, o;
		uint64_t off, len;

		ret = decode_at(img, tab, i, &m);
		if (ret < 0)
			return uq_seterr(ret, "%s: L2 table at 0x%llx, entry %llu: %s", img->path,
					 (unsigned long long)l2_off, (unsigned long long)i,
					 uq_errmsg());
		if (o_off && decode_at(img, r->otab, i, &o) == 0 && same_refs(&m, &o))
			continue;
		if (m.type == UQ_C_COMPRESSED) {
			/* every host cluster the compressed bytes touch, as the
			 * write path and check count them */
			uq_comp_span(&m, &off, &len);
			for (uint64_t c = off >> g->cluster_bits;
			     ret == 0 && c <= (off + len - 1) >> g->cluster_bits; c++)
				ret = ref_one(r, c, false);
		} else if (m.host_off && !g->external_data) {
			ret = ref_one(r, m.host_off >> g->cluster_bits, false);
		}
	}
	return ret;
}

static int walk_l1(struct walk *r, const uint64_t *l1, uint32_t n)
{
	struct uq_walk w = { .img = r->img, .what = UQ_WALK_DATA, .region = ref_region,
			     .want_l2 = ref_want, .l1_entry = ref_l1_entry,
			     .l2_table = ref_l2_table, .arg = r };
	int ret = uq_walk_l1(&w, 0, n, l1);

	return ret < 0 ? ret : 0;
}

int uq_snap_update_refs(uq_image *img, const uint64_t *l1, uint32_t n, int delta,
			const uint64_t *other, uint32_t other_n)
{
	struct walk w = { .img = img, .delta = delta, .limit = UINT64_MAX,
			  .other = other, .other_n = other ? other_n : 0 };
	void *otab = NULL;
	int ret;

	if (other && posix_memalign(&otab, img->align, cs(img)))
		return -ENOMEM;
	w.otab = otab;
	ret = walk_l1(&w, l1, n);
	if (ret < 0 && delta > 0) {
		/* undo exactly the updates made, in the same order */
		struct walk u = w;
		char msg[512];

		u.delta = -delta;
		u.limit = w.done;
		u.done = 0;
		snprintf(msg, sizeof(msg), "%s", uq_errmsg());
		if (walk_l1(&u, l1, n) < 0 || u.done != w.done)
			uq_stop_writes(img, "undoing a snapshot's refcount changes failed");
		uq_seterr(ret, "%s", msg);
	}
	free(otab);
	return ret;
}

static int want_copied(uq_image *img, uint64_t off, bool *want)
{
	uint64_t v;
	int ret = uq_rc_get(img, off >> img->g.cluster_bits, &v);

	*want = v == 1;
	return ret;
}

/* Recompute the flags of one L2 table; *dirty when it changed. */
static int fix_l2(uq_image *img, uint8_t *tab, bool *dirty)
{
	const struct uq_geom *g = &img->g;
	int ret = 0;

	*dirty = false;
	for (uint64_t i = 0; ret == 0 && i < g->l2_entries; i++) {
		uint8_t *e = tab + i * g->l2_entry_bytes;
		uint64_t v = uq_be64(e), nv;
		struct uq_l2map m;
		bool want;

		ret = uq_l2_decode(g, v, g->extended_l2 ? uq_be64(e + 8) : 0, &m);
		if (ret < 0 || m.type == UQ_C_COMPRESSED || !m.host_off)
			continue;
		ret = want_copied(img, m.host_off, &want);
		nv = want ? v | QCOW_OFLAG_COPIED : v & ~QCOW_OFLAG_COPIED;
		if (ret == 0 && nv != v) {
			uq_put_be64(e, nv);
			*dirty = true;
		}
	}
	return ret < 0 ? ret : 0;
}

struct fix {
	bool l1_dirty;
};

/* The L1 entry's own flag, from its table's refcount. */
static int fix_l1_entry(struct uq_walk *w, uint32_t i, uint64_t raw)
{
	uq_image *img = w->img;
	uint64_t l2 = raw & QCOW_L1E_OFFSET_MASK, nv;
	bool want;
	int ret = want_copied(img, l2, &want);

	nv = want ? l2 | QCOW_OFLAG_COPIED : l2;
	if (ret == 0 && nv != img->l1[i]) {
		img->l1[i] = nv;
		((struct fix *)w->arg)->l1_dirty = true;
	}
	return ret;
}

static int fix_l2_table(struct uq_walk *w, uint64_t l2, uint8_t *tab)
{
	uq_image *img = w->img;
	bool dirty;
	int ret = fix_l2(img, tab, &dirty);

	if (ret == 0 && dirty) {
		/* only flags change: a torn write leaves valid entries */
		ret = uq_meta_pwrite(img, UQ_MK_L2, tab, cs(img), l2);
		l2c_invalidate(img->l2c, l2);
	}
	return ret;
}

int uq_snap_fix_copied(uq_image *img)
{
	struct fix f = { 0 };
	struct uq_walk w = { .img = img, .what = UQ_WALK_DATA,
			     .want_l2 = uq_walk_want_decoded, .l1_entry = fix_l1_entry,
			     .l2_table = fix_l2_table, .arg = &f };
	int ret;

	if (img->g.external_data)
		return 0;
	ret = uq_walk_l1(&w, img->h.l1_table_offset, img->h.l1_size, img->l1);
	if (ret == 0 && f.l1_dirty)
		ret = uq_write_table64(img, UQ_MK_L1, img->h.l1_table_offset, img->l1, img->h.l1_size,
				       (uint64_t)img->h.l1_size * 8);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0)
		return uq_seterr(ret, "%s: updating COPIED flags failed: %s", img->path,
				 uq_errmsg());
	return 0;
}
