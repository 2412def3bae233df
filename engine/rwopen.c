// SPDX-License-Identifier: MIT
/* Opening a qcow2 image for writing (refcounts, the overlap set, the
 * autoclear bits we don't maintain, the rebuild of a dirty image's
 * refcounts, bitmaps marked in use) and closing it (lazy refcounts reach
 * the disk, bitmaps are written back). */
#include <errno.h>
#include <stdlib.h>

#include "bitmap.h"
#include "error.h"
#include "header.h"
#include "internal.h"
#include "overlap.h"
#include "recount.h"

static uint64_t csz(const uq_image *img) { return img->g.cluster_size; }

int uq_write_open(uq_image *img)
{
	uint64_t known = QCOW_AUTOCLEAR_DATA_FILE_RAW | QCOW_AUTOCLEAR_BITMAPS;
	int ret;

	img->alloc.host_end = (img->file_size + csz(img) - 1) & ~(csz(img) - 1);
	img->alloc.written_end = img->alloc.host_end;
	img->alloc.free_hint = 1;
	img->rc.lazy = img->h.compatible_features & QCOW_COMPAT_LAZY_REFCOUNTS;
	ret = uq_rc_load(img);
	if (ret == 0)
		ret = uq_meta_build(img);
	if (ret < 0)
		return ret;
	/* Bits we don't maintain are cleared before the first write, as the
	 * spec requires of autoclear features. Bitmaps we keep (bitmap.c). */
	if (img->h.version >= 3 && (img->h.autoclear_features & ~known)) {
		img->h.autoclear_features &= known;
		ret = uq_header_write_u64(img, QCOW_HDR_AUTOCLEAR, img->h.autoclear_features);
		if (ret == 0)
			ret = io_fsync(img->file);
		if (ret < 0)
			return ret;
	}
	img->writable = true;
	if (img->h.incompatible_features & QCOW_INCOMPAT_DIRTY) {
		uint64_t *counts, n;

		/* refcounts may be behind the L2 tables: rebuild them */
		ret = uq_count_refs(img, &counts, &n);
		if (ret == 0) {
			ret = uq_rc_rebuild(img, counts, n, img->h.refcount_order);
			free(counts);
		}
		if (ret == 0)
			ret = uq_header_set_dirty(img, false);
		if (ret < 0)
			return uq_seterr(ret, "repairing refcounts of a dirty image: %s",
					 uq_errmsg());
	}
	/* a repair handle takes no guest writes: bitmaps stay as they are */
	if (!(img->flags & UQ_OPEN_REPAIR))
		ret = uq_bm_start(img);
	return ret;
}

int uq_write_close(uq_image *img)
{
	int ret;

	if (!img->writable)
		return 0;
	ret = uq_meta_flush(img);
	/* the guest writes are durable: the bitmaps may say so */
	if (ret == 0)
		ret = uq_bm_finish(img);
	if (ret == 0 && img->rc.lazy) {
		ret = uq_rc_write_dirty(img);
		if (ret == 0)
			ret = io_fsync(img->file);
		if (ret == 0)
			ret = uq_header_set_dirty(img, false);
	}
	return ret;
}
