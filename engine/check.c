// SPDX-License-Identifier: MIT
/* qemu-img check's sequence (uq_check): map the metadata, count real
 * references, compare them with the stored refcounts, repair what the
 * flags allow, rebuild where patching can't help, and check the COPIED
 * flags of the active state. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "walk.h"

/* COPIED must be set exactly where the refcount is 1 (qemu's check_oflag_copied). */
struct copied {
	struct ck *ck;
	bool repair;
	bool skip;                /* the table's refcount can't be read */
};

static bool copied_want(struct uq_walk *w, uint32_t idx, uint64_t e)
{
	(void)w, (void)idx;
	return (e & QCOW_L1E_OFFSET_MASK) != 0;
}

static int copied_l1_entry(struct uq_walk *w, uint32_t idx, uint64_t e)
{
	struct copied *cp = w->arg;
	struct ck *ck = cp->ck;
	uint64_t l2 = e & QCOW_L1E_OFFSET_MASK, rc;
	int ret;

	ck_work(ck, 1);
	cp->skip = ck_stored(ck, l2 >> ck->img->g.cluster_bits, &rc) < 0;
	if (cp->skip || (rc == 1) == !!(e & QCOW_OFLAG_COPIED))
		return 0;
	ck->res->corruptions++;
	ck_msg(ck, "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%" PRIx64
	       " refcount=%" PRIu64, cp->repair ? "Repairing" : "ERROR", idx, e, rc);
	if (!cp->repair)
		return 0;
	ret = ck_write_l1_entry(ck, idx, rc == 1 ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED);
	if (ret == 0) {
		ck->res->corruptions--;
		ck->res->corruptions_fixed++;
	} else if (ret != -EBUSY) {   /* -EBUSY: refused, the table overlaps metadata */
		ck->res->check_errors++;
		return ret;
	}
	return 0;
}

static int copied_l2_table(struct uq_walk *w, uint64_t l2, uint8_t *tab)
{
	struct copied *cp = w->arg;
	struct ck *ck = cp->ck;
	const struct uq_geom *g = &ck->img->g;
	unsigned dirty = 0;
	int ret;

	if (cp->skip)
		return 0;
	for (uint64_t j = 0; j < g->l2_entries; j++) {
		uint8_t *p = tab + j * g->l2_entry_bytes;
		uint64_t le = uq_be64(p), rc;
		enum ck_ctype t = le ? ck_classify(g, le) : CT_UNALLOC;

		if (t != CT_NORMAL && t != CT_ZERO_ALLOC)
			continue;
		if (g->external_data)
			rc = 1;
		else if (ck_stored(ck, (le & QCOW_L2E_OFFSET_MASK) >> g->cluster_bits, &rc) < 0)
			continue;
		if ((rc == 1) == !!(le & QCOW_OFLAG_COPIED))
			continue;
		ck->res->corruptions++;
		ck_msg(ck, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%"
		       PRIu64, cp->repair ? "Repairing" : "ERROR", le, rc);
		if (cp->repair) {
			uq_put_be64(p, rc == 1 ? le | QCOW_OFLAG_COPIED : le & ~QCOW_OFLAG_COPIED);
			dirty++;
		}
	}
	if (!dirty)
		return 0;
	ret = ck_write_l2(ck, l2, tab);
	if (ret == 0) {
		ck->res->corruptions -= dirty;
		ck->res->corruptions_fixed += dirty;
	} else if (ret != -EBUSY) {
		ck_msg(ck, "ERROR: Could not write L2 table: %s", strerror(-ret));
		ck->res->check_errors++;
	}
	return 0;
}

static int copied_bad(struct uq_walk *w, enum uq_mkind k, uint64_t off, int err)
{
	struct copied *cp = w->arg;

	(void)k, (void)off;
	ck_msg(cp->ck, "ERROR: Could not read L2 table: %s", strerror(-err));
	cp->ck->res->check_errors++;
	return err;
}

static int check_copied(struct ck *ck, unsigned fix)
{
	uq_image *img = ck->img;
	struct uq_check_result *res = ck->res;
	struct copied cp = {
		.ck = ck,
		.repair = (fix & UQ_CHECK_REPAIR_ERRORS) ||
			  ((fix & UQ_CHECK_REPAIR_LEAKS) && !res->check_errors &&
			   !res->corruptions && !res->leaks),
	};
	struct uq_walk w = { .img = img, .what = UQ_WALK_DATA,
			     .want_l2 = copied_want, .l1_entry = copied_l1_entry,
			     .l2_table = copied_l2_table, .bad = copied_bad, .arg = &cp };
	int ret = uq_walk_l1(&w, img->h.l1_table_offset, img->h.l1_size, img->l1);

	if (ret == -ENOMEM)
		res->check_errors++;
	return ret;
}

struct counters {
	uint64_t check_errors, corruptions, leaks, corruptions_fixed, leaks_fixed;
};

static struct counters save_counters(const struct uq_check_result *r)
{
	return (struct counters){ r->check_errors, r->corruptions, r->leaks,
				  r->corruptions_fixed, r->leaks_fixed };
}

static void restore_counters(struct uq_check_result *r, const struct counters *c)
{
	r->check_errors = c->check_errors;
	r->corruptions = c->corruptions;
	r->leaks = c->leaks;
	r->corruptions_fixed = c->corruptions_fixed;
	r->leaks_fixed = c->leaks_fixed;
}

/* After a rebuild: recount, and free what the old structures held (the
 * "fresh leaks", which like qemu are not reported as fixed leaks). */
static int after_rebuild(struct ck *ck, unsigned flags, uint64_t *highest)
{
	struct uq_check_result *res = ck->res;
	struct counters old = save_counters(res), saved;
	uint64_t nl2, fresh = 0, wrong = 0;
	int ret;

	res->corruptions = res->leaks = 0;
	ret = ck_load(ck, &nl2);
	if (ret == 0)
		ret = ck_calculate(ck, 0);
	if (ret < 0)
		return ret;
	saved = save_counters(res);
	restore_counters(res, &(struct counters){ 0 });
	if (flags & UQ_CHECK_REPAIR_LEAKS) {
		ret = ck_compare(ck, UQ_CHECK_REPAIR_LEAKS, highest);
		if (ck->rebuild)
			ck_msg(ck, "ERROR rebuilt refcount structure is still broken");
		fresh = res->leaks;
		wrong = res->corruptions;
	} else {
		/* only the stored refcounts are wanted: no lines, no counts */
		void (*report)(void *, const char *) = res->report;

		res->report = NULL;
		ret = ck_compare(ck, 0, highest);
		res->report = report;
		wrong = res->corruptions;
	}
	restore_counters(res, &saved);
	/* refcounts the rebuilt structures still get wrong are left, not
	 * fixed (e.g. a reference past the end of the file that the new
	 * structures now cover): the compare's count, not only the walk's */
	res->corruptions += wrong;
	if (res->corruptions < old.corruptions)
		res->corruptions_fixed += old.corruptions - res->corruptions;
	if (res->leaks < old.leaks)
		res->leaks_fixed += old.leaks - res->leaks;
	res->leaks += fresh;
	return ret;
}

static int run(struct ck *ck, unsigned flags)
{
	uq_image *img = ck->img;
	struct uq_check_result *res = ck->res;
	struct counters pre;
	uint64_t highest = 0, nl2;
	int ret;

	ret = ck_sync(ck);
	if (ret == 0)
		ret = ck_l1_on_disk(ck, flags);
	if (ret == 0)
		ret = ck_load(ck, &nl2);
	if (ret == 0)
		ret = ck_calculate(ck, flags);
	if (ret < 0)
		return ret;
	pre = save_counters(res);
	ret = ck_compare(ck, 0, &highest);
	if (ret < 0)
		return ret;
	if (ck->rebuild && (flags & UQ_CHECK_REPAIR_ERRORS)) {
		ck_msg(ck, "Rebuilding refcount structure");
		ret = ck_rebuild(ck);
		if (ret < 0) {
			ck_msg(ck, "ERROR rebuilding the refcount structure: %s", uq_errmsg());
			res->check_errors++;
			return ret;
		}
		res->rebuilt = 1;
		ret = after_rebuild(ck, flags, &highest);
	} else if (flags) {
		if (ck->rebuild) {
			ck_msg(ck, "ERROR need to rebuild refcount structures");
			res->check_errors++;
			return uq_seterr(-EIO, "%s: the refcount structures need a rebuild "
					 "(check -r all)", img->path);
		}
		if (res->leaks || res->corruptions) {
			restore_counters(res, &pre);
			ret = ck_compare(ck, flags, &highest);
		}
	}
	if (ret < 0)
		return ret;
	ck_report_overlaps(ck);
	ret = check_copied(ck, flags);
	if (ret < 0)
		return ret;
	res->image_end_offset = (highest + 1) * ck->cs;
	if (flags && !res->check_errors && !res->corruptions)
		ret = ck_mark_clean(ck);
	return ret;
}

int uq_check_impl(uq_image *img, unsigned flags, struct uq_check_result *out)
{
	struct uq_check_result res = { 0 };
	size_t n = out->struct_size < sizeof(res) ? out->struct_size : sizeof(res);
	struct ck ck = { 0 };
	int ret, ret2;

	/* callers built against an older, shorter struct get what fits */
	memcpy(&res, out, n);
	memset(&res.check_errors, 0, sizeof(res) - offsetof(struct uq_check_result,
							    check_errors));
	uq_errclear();
	if (img->fmt != UQ_FMT_QCOW2) {
		ret = uq_seterr(-ENOTSUP, "This image format does not support checks");
		goto out;
	}
	if (flags & ~UQ_CHECK_REPAIR_ALL) {
		ret = uq_seterr(-EINVAL, "unknown check flags 0x%x", flags);
		goto out;
	}
	if (flags && !(img->flags & UQ_OPEN_RDWR)) {
		ret = uq_seterr(-EROFS, "%s: repairs need the image opened read-write",
				img->path);
		goto out;
	}
	ck.img = img;
	ck.res = &res;
	ck.cs = img->g.cluster_size;
	ck.repair_handle = (img->flags & UQ_OPEN_REPAIR) != 0;
	res.dirty = !!(img->h.incompatible_features & QCOW_INCOMPAT_DIRTY);
	res.corrupt = !!(img->h.incompatible_features & QCOW_INCOMPAT_CORRUPT);
	res.total_clusters = (img->size + ck.cs - 1) / ck.cs;
	ret = run(&ck, flags);
	ret2 = flags ? ck_finish(&ck) : 0;
	ck_free(&ck);
	if (ret == 0)
		ret = ret2;
out:
	memcpy(out, &res, n);
	return ret;
}
