// SPDX-License-Identifier: MIT
/* Writing metadata back in the order that keeps a crash harmless: data,
 * refcount increases, L2 tables, the L1 table, then the refcount
 * decreases of what the new entries no longer reference; one fsync at
 * each ordering point. Also the flush calls of the API. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "header.h"
#include "internal.h"
#include "request.h"
#include "walk.h"
#include "stats.h"

static uint64_t csz(const uq_image *img) { return img->g.cluster_size; }

static int write_l2(void *arg, uint64_t off, const uint8_t *tab)
{
	uq_image *img = arg;
	int ret;

	uq_count(img->ctx, UQ_STAT_L2_WRITEBACKS, 1);
	ret = uq_meta_pwrite(img, UQ_MK_L2, tab, csz(img), off);

	if (ret == 0)
		l2c_clean(img->l2c, off);
	return ret;
}

static int write_l1(uq_image *img)
{
	return uq_write_table64(img, UQ_MK_L1, img->h.l1_table_offset, img->l1, img->h.l1_size,
				(uint64_t)img->h.l1_size * 8);
}

static bool rb_dirty(const uq_image *img)
{
	for (uint64_t i = 0; i < img->rc.entries; i++)
		if (img->rc.block_dirty[i])
			return true;
	return img->rc.table_dirty;
}

/* Data, then refcount increases, then L2 tables, then L1, then the
 * refcount decreases of what the new L2 entries no longer reference. */
int uq_meta_flush(uq_image *img)
{
	bool l2;
	int ret = 0;

	/* data before the L2 entries that point at it */
	while (img->writes_inflight && ret >= 0)
		ret = io_reap(img->ctx->q, 1);
	if (ret < 0)
		return ret;
	ret = 0;   /* io_reap counted completions */
	if (!img->writable)   /* a data write failed: its L2 entry must stay off disk */
		return uq_seterr(-EIO, "%s: a data write failed; metadata is not written",
				 img->path);
	l2 = l2c_dirty_count(img->l2c) > 0;
	if (!l2 && !img->l1_dirty && !img->rc.nfrees && !(img->rc.lazy ? false : rb_dirty(img))) {
		/* no metadata, but data written in place must be durable too */
		ret = io_fsync(img->data);
		return ret < 0 ? uq_seterr(ret, "%s: flush failed: %s", img->path,
					   strerror(-ret)) : 0;
	}
	uq_count(img->ctx, UQ_STAT_META_FLUSHES, 1);
	if (img->rc.lazy)
		ret = uq_header_set_dirty(img, true);
	if (ret == 0 && img->data != img->file)
		ret = io_fsync(img->data);
	if (ret == 0 && !img->rc.lazy)
		ret = uq_rc_write_dirty(img);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret == 0 && l2)
		ret = l2c_for_each_dirty(img->l2c, write_l2, img);
	if (ret == 0 && img->l1_dirty) {
		ret = io_fsync(img->file);
		if (ret == 0)
			ret = write_l1(img);
		img->l1_dirty = false;
	}
	if (ret == 0 && img->rc.nfrees) {
		ret = io_fsync(img->file);
		if (ret == 0)
			ret = uq_rc_apply_frees(img);
		img->alloc.comp_next = 0;   /* its cluster may have been freed */
		if (ret == 0 && !img->rc.lazy)
			ret = uq_rc_write_dirty(img);
	}
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0) {
		uq_stop_writes(img, "writing metadata failed");
		return uq_seterr(ret, "%s: writing metadata failed: %s", img->path,
				 strerror(-ret));
	}
	return 0;
}

int uq_flush_impl(uq_image *img)
{
	int ret;

	if (!(img->flags & UQ_OPEN_RDWR))
		return 0;
	uq_count(img->ctx, UQ_STAT_REQ_FLUSH_OPS, 1);
	if (img->fmt != UQ_FMT_QCOW2) {
		while (io_pending(img->ctx->q))
			if (io_reap(img->ctx->q, 1) < 0)
				break;
		return io_fsync(img->file);
	}
	if (!img->writable)
		return uq_seterr(-EIO, "%s: image can't be written", img->path);
	ret = uq_meta_flush(img);
	return ret;
}

int uq_aio_flush_impl(uq_image *img, uq_done_fn cb, void *arg)
{
	struct uq_done *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->cb = cb;
	d->arg = arg;
	d->ctx = img->ctx;
	d->res = uq_flush_impl(img);
	uq_ctx_complete(img->ctx, d);
	return 0;
}
