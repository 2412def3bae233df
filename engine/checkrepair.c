// SPDX-License-Identifier: MIT
/* The check's repairs: refcounts patched or rebuilt, L1/L2 entries
 * rewritten, dirty and corrupt bits cleared once the image is whole. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "header.h"
#include "overlap.h"
#include "recount.h"
#include "stats.h"

/* A writable image keeps metadata in memory: put it on disk so the
 * check, which reads the disk, sees what the engine sees. */
int ck_sync(struct ck *ck)
{
	uq_image *img = ck->img;
	int ret;

	if (!img->writable)
		return 0;
	ret = uq_meta_flush(img);
	if (ret == 0)
		ret = uq_rc_write_dirty(img);   /* lazy refcounts live in memory */
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0)
		ck->res->check_errors++;
	return ret;
}

/* The active L1 table in use must be the one in the file. A cluster
 * freed while it still held the L1 (an image whose refcounts missed one
 * of its uses) was punched to zeros under a table the session still read
 * through; counting from memory, a repair left nothing and the next open
 * lost the data (image_ops: leaks-back-after-repair-reopen). A repair
 * writes the table in use back. Called after ck_sync: nothing is dirty. */
int ck_l1_on_disk(struct ck *ck, unsigned flags)
{
	uq_image *img = ck->img;
	uint64_t n = img->h.l1_size, *disk;
	int ret;

	if (!img->writable || !n || !img->l1)
		return 0;
	ret = uq_read_table64(img, UQ_MK_L1, img->h.l1_table_offset, n, &disk);
	if (ret < 0) {
		ck->res->check_errors++;
		return ret;
	}
	if (memcmp(disk, img->l1, (size_t)n * 8)) {
		ck_msg(ck, "ERROR the active L1 table in the file differs from the "
		       "one in use%s", flags & UQ_CHECK_REPAIR_ERRORS ?
		       ": writing it back" : "");
		ck->res->corruptions++;
		if (flags & UQ_CHECK_REPAIR_ERRORS) {
			ret = uq_write_table64(img, UQ_MK_L1, img->h.l1_table_offset,
					       img->l1, n, n * 8);
			if (ret == 0)
				ret = io_fsync(img->file);
			if (ret < 0) {
				ck->res->check_errors++;
			} else {
				ck->res->corruptions--;
				ck->res->corruptions_fixed++;
			}
		}
	}
	free(disk);
	return ret;
}

/* Refcount fixes go through the engine's refcount layer, which needs the
 * write state. A repair handle gets it only now: at open the refcount
 * structures may have been too broken to load. */
int ck_write_state(struct ck *ck)
{
	uq_image *img = ck->img;
	uint64_t dirty, bitmaps;
	int ret;

	if (img->writable)
		return 0;
	if (ck->state_err)
		return ck->state_err;
	if (!(img->flags & UQ_OPEN_RDWR))
		return uq_seterr(-EROFS, "%s: image is open read-only", img->path);
	ret = io_file_size(img->file, &img->file_size);
	if (ret < 0)
		goto fail;
	uq_rc_release(img);
	img->rc.entries = 0;
	img->rc.nfrees = img->rc.frees_cap = 0;
	img->rc.free_clusters = 0;
	/* uq_write_open would rebuild a dirty image's refcounts on its own
	 * (the check does that, and reports it) and clear the bitmaps bit
	 * (repairs don't touch guest data, so bitmaps stay valid) */
	dirty = img->h.incompatible_features & QCOW_INCOMPAT_DIRTY;
	bitmaps = img->h.autoclear_features & QCOW_AUTOCLEAR_BITMAPS;
	img->h.incompatible_features &= ~dirty;
	img->h.autoclear_features &= ~bitmaps;
	ret = uq_write_open(img);
	img->h.incompatible_features |= dirty;
	img->h.autoclear_features |= bitmaps;
	if (ret == 0)
		return 0;
fail:
	uq_stop_writes(img, "the repair could not set up its write state");
	ck->state_err = ret;
	ck_msg(ck, "ERROR can't repair: %s", uq_errmsg());
	ck->res->check_errors++;
	return ret;
}

int ck_fix_refcount(struct ck *ck, uint64_t cluster, uint64_t stored, uint64_t want)
{
	uint64_t d = want > stored ? want - stored : stored - want;
	int ret = ck_write_state(ck);

	if (ret < 0)
		return ret;
	if (d > INT64_MAX)
		return -ERANGE;
	return uq_rc_add(ck->img, cluster, want > stored ? (int64_t)d : -(int64_t)d);
}

int ck_write_refcounts(struct ck *ck)
{
	int ret;

	if (!ck->img->writable)
		return 0;
	ret = uq_rc_write_dirty(ck->img);
	if (ret == 0)
		ret = io_fsync(ck->img->file);
	return ret;
}

int ck_write_l2_entry(struct ck *ck, uint64_t l2_off, uint64_t idx, const uint8_t *entry)
{
	uq_image *img = ck->img;
	size_t eb = img->g.l2_entry_bytes;
	int ret = uq_meta_pwrite(img, UQ_MK_L2, entry, eb, l2_off + idx * eb);

	if (ret == 0)
		ret = io_fsync(img->file);
	/* a cached copy would hide the change from readers */
	l2c_invalidate(img->l2c, l2_off);
	return ret;
}

/* -EBUSY: refused, the table shares its cluster with metadata that is
 * written in place; writing it would damage that too. */
int ck_write_l2(struct ck *ck, uint64_t l2_off, const uint8_t *tab)
{
	uq_image *img = ck->img;
	int ret;

	if (ck_conflicts(ck, l2_off, ck->cs)) {
		ck_msg(ck, "ERROR: Could not write L2 table; metadata overlap check failed: "
		       "it shares its cluster with other metadata");
		return -EBUSY;
	}
	ret = uq_meta_pwrite(img, UQ_MK_L2, tab, (size_t)ck->cs, l2_off);
	l2c_invalidate(img->l2c, l2_off);
	return ret;
}

int ck_write_l1_entry(struct ck *ck, uint32_t idx, uint64_t val)
{
	uq_image *img = ck->img;
	uint64_t at = img->h.l1_table_offset + (uint64_t)idx * 8;
	uint8_t b[8];
	int ret;

	if (ck_conflicts(ck, at, 8)) {
		ck_msg(ck, "ERROR: Could not write L1 table; metadata overlap check failed: "
		       "it shares its cluster with other metadata");
		return -EBUSY;
	}
	uq_put_be64(b, val);
	ret = uq_meta_pwrite(img, UQ_MK_L1, b, 8, at);
	if (ret == 0)
		img->l1[idx] = val;
	return ret;
}

/* Fresh refcount structures from the real counts, less the references
 * the old structures held (they stay behind, unreferenced: the recount
 * that follows frees them as leaks). */
int ck_rebuild(struct ck *ck)
{
	uq_image *img = ck->img;
	uint32_t cb = img->g.cluster_bits;
	uint64_t *counts = malloc(ck->nb * sizeof(*counts));
	uint64_t rt = img->h.refcount_table_offset;
	int ret;

	if (!counts)
		return uq_seterr(-ENOMEM, "out of memory rebuilding refcounts");
	for (uint64_t c = 0; c < ck->nb; c++)
		counts[c] = ck_count(ck, c);
	for (uint64_t c = rt >> cb; ck->rt_n && c <= (rt + ck->rt_n * 8 - 1) >> cb; c++)
		if (c < ck->nb && counts[c])
			counts[c]--;
	for (uint64_t i = 0; i < ck->rt_n; i++) {
		uint64_t off = ck->rt[i] & QCOW_REFT_OFFSET_MASK, c = off >> cb;

		if (off && !(off & (ck->cs - 1)) && !(ck->rt[i] & QCOW_REFT_RESERVED) &&
		    c < ck->nb && counts[c])
			counts[c]--;
	}
	ret = uq_rc_rebuild(img, counts, ck->nb, img->h.refcount_order);
	free(counts);
	return ret;
}

/* Nothing is left broken: the dirty and corrupt bits go (qemu's
 * mark_clean and mark_consistent), after everything else is durable. */
int ck_mark_clean(struct ck *ck)
{
	uq_image *img = ck->img;
	uint64_t bits = QCOW_INCOMPAT_DIRTY | QCOW_INCOMPAT_CORRUPT;
	uint64_t v = img->h.incompatible_features & ~bits;
	int ret;

	if (v == img->h.incompatible_features || img->h.version < 3)
		return 0;
	ret = ck_write_refcounts(ck);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret == 0)
		ret = uq_header_write_u64(img, QCOW_HDR_INCOMPAT, v);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0) {
		ck->res->check_errors++;
		return uq_seterr(ret, "%s: clearing the dirty and corrupt bits failed",
				 img->path);
	}
	img->h.incompatible_features = v;
	ck->res->marked_clean = 1;
	return 0;
}

/* After repairs: everything on disk. A repair handle stops being
 * writable, so no guest write can follow a check that left the bitmaps
 * bit set or a corruption behind. */
int ck_finish(struct ck *ck)
{
	uq_image *img = ck->img;
	int ret = 0;

	if (img->writable) {
		ret = ck_write_refcounts(ck);
		if (ret == 0)
			ret = io_fsync(img->file);
	}
	if (ck->repair_handle)
		uq_stop_writes(img, "the image was opened for repairs only");
	if (ret < 0) {
		ck->res->check_errors++;
		return uq_seterr(ret, "%s: writing repairs failed", img->path);
	}
	return 0;
}





