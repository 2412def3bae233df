// SPDX-License-Identifier: MIT
/* The public API, every function of uqcow.h and nothing else: each call
 * clears the thread's message, runs the engine's implementation and, if
 * that failed without saying why, says what failed, so uq_errmsg() never
 * shows an older call's message. Structs that cross the API carry
 * struct_size: the caller's size is honoured both ways. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "error.h"
#include "internal.h"

static int finish(int ret, const char *who, const char *what)
{
	if (ret < 0 && !*uq_errmsg())
		uq_seterr(ret, "%s%s%s failed: %s", who ? who : "", who ? ": " : "", what,
			  strerror(-ret));
	return ret;
}

/* Fields the caller's version of the struct has; struct_size stays its. */
static void copy_out(void *out, const void *full, size_t out_size, size_t full_size)
{
	size_t keep = sizeof(size_t);

	memcpy((char *)out + keep, (const char *)full + keep,
	       (out_size < full_size ? out_size : full_size) - keep);
}

int uq_open(const char *path, const struct uq_open_opts *opts, uq_image **out)
{
	int ret;

	uq_errclear();
	ret = uq_open_impl(path, opts, out);
	return finish(ret, path, "open");
}

int uq_close(uq_image *img)
{
	/* the path goes with the image: name it before it is freed */
	char who[256];
	int ret;

	uq_errclear();
	if (!img)
		return 0;
	snprintf(who, sizeof(who), "%s", img->path);
	(void)uq_settle(img);   /* close writes back what it can regardless */
	ret = uq_close_impl(img);
	return finish(ret, who, "close");
}

int uq_get_info(uq_image *img, struct uq_info *out)
{
	struct uq_info full = { .struct_size = sizeof(full) };
	int ret;

	uq_errclear();
	if (!out || out->struct_size < sizeof(out->struct_size))
		return uq_seterr(-EINVAL, "uq_get_info: struct_size is not set");
	ret = uq_get_info_impl(img, &full);
	if (ret == 0)
		copy_out(out, &full, out->struct_size, sizeof(full));
	return finish(ret, img->path, "info");
}

uq_image *uq_backing(uq_image *img)
{
	return uq_backing_impl(img);
}

int uq_snapshot_get(uq_image *img, uint32_t idx, struct uq_snapshot_info *out)
{
	struct uq_snapshot_info full = { .struct_size = sizeof(full) };
	int ret;

	uq_errclear();
	if (!out || out->struct_size < sizeof(out->struct_size))
		return uq_seterr(-EINVAL, "uq_snapshot_get: struct_size is not set");
	ret = uq_snapshot_get_impl(img, idx, &full);
	if (ret == 0)
		copy_out(out, &full, out->struct_size, sizeof(full));
	return finish(ret, img->path, "snapshot info");
}

int uq_block_status(uq_image *img, uint64_t off, uint64_t len, struct uq_extent *ext)
{
	struct uq_extent full = { .struct_size = sizeof(full) };
	int ret;

	uq_errclear();
	if (!ext || ext->struct_size < sizeof(ext->struct_size))
		return uq_seterr(-EINVAL, "uq_block_status: struct_size is not set");
	ret = uq_block_status_impl(img, off, len, &full);
	if (ret == 0)
		copy_out(ext, &full, ext->struct_size, sizeof(full));
	return finish(ret, img->path, "block status");
}

int uq_aio_read(uq_image *img, void *buf, size_t len, uint64_t off, uq_done_fn cb, void *arg)
{
	int ret;

	uq_errclear();
	ret = uq_aio_read_impl(img, buf, len, off, cb, arg);
	return finish(ret, img->path, "read");
}

int uq_poll(uq_image *img, unsigned min_complete)
{
	int ret;

	uq_errclear();
	ret = uq_poll_impl(img, min_complete);
	return finish(ret, img->path, "poll");
}

ssize_t uq_pread(uq_image *img, void *buf, size_t len, uint64_t off)
{
	ssize_t ret;

	uq_errclear();
	ret = uq_pread_impl(img, buf, len, off);
	return ret < 0 ? finish((int)ret, img->path, "read") : ret;
}

int uq_create(const char *path, const struct uq_create_opts *opts)
{
	int ret;

	uq_errclear();
	ret = uq_create_impl(path, opts);
	return finish(ret, path, "create");
}

int uq_aio_write(uq_image *img, const void *buf, size_t len, uint64_t off, unsigned flags, uq_done_fn cb, void *arg)
{
	int ret;

	uq_errclear();
	ret = uq_aio_write_impl(img, buf, len, off, flags, cb, arg);
	return finish(ret, img->path, "write");
}

int uq_aio_write_zeroes(uq_image *img, uint64_t off, uint64_t len, unsigned flags, uq_done_fn cb, void *arg)
{
	int ret;

	uq_errclear();
	ret = uq_aio_write_zeroes_impl(img, off, len, flags, cb, arg);
	return finish(ret, img->path, "write zeroes");
}

int uq_aio_discard(uq_image *img, uint64_t off, uint64_t len, uq_done_fn cb, void *arg)
{
	int ret;

	uq_errclear();
	ret = uq_aio_discard_impl(img, off, len, cb, arg);
	return finish(ret, img->path, "discard");
}

int uq_aio_flush(uq_image *img, uq_done_fn cb, void *arg)
{
	int ret;

	uq_errclear();
	ret = uq_aio_flush_impl(img, cb, arg);
	return finish(ret, img->path, "flush");
}

ssize_t uq_pwrite(uq_image *img, const void *buf, size_t len, uint64_t off, unsigned flags)
{
	ssize_t ret;

	uq_errclear();
	ret = uq_pwrite_impl(img, buf, len, off, flags);
	return ret < 0 ? finish((int)ret, img->path, "write") : ret;
}

int uq_write_zeroes(uq_image *img, uint64_t off, uint64_t len, unsigned flags)
{
	int ret;

	uq_errclear();
	ret = uq_write_zeroes_impl(img, off, len, flags);
	return finish(ret, img->path, "write zeroes");
}

int uq_discard(uq_image *img, uint64_t off, uint64_t len)
{
	int ret;

	uq_errclear();
	ret = uq_discard_impl(img, off, len);
	return finish(ret, img->path, "discard");
}

int uq_flush(uq_image *img)
{
	int ret;

	uq_errclear();
	ret = uq_flush_impl(img);
	return finish(ret, img->path, "flush");
}

int uq_resize(uq_image *img, uint64_t size)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_resize_impl(img, size);
	return finish(ret, img->path, "resize");
}

int uq_amend_refcount_bits(uq_image *img, uint32_t bits)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_amend_refcount_bits_impl(img, bits);
	return finish(ret, img->path, "amend");
}

int uq_amend(uq_image *img, const struct uq_amend_opts *opts)
{
	struct uq_amend_opts full = { .struct_size = sizeof(full) };
	int ret;

	uq_errclear();
	if (!opts || opts->struct_size < offsetof(struct uq_amend_opts, lazy_refcounts))
		return finish(uq_seterr(-EINVAL, "uq_amend: struct_size too small"),
			      img->path, "amend");
	memcpy(&full, opts, opts->struct_size < sizeof(full) ? opts->struct_size
							     : sizeof(full));
	full.struct_size = sizeof(full);
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_amend_impl(img, &full);
	return finish(ret, img->path, "amend");
}

int uq_queue_create(uq_image *img, unsigned depth, uq_queue **out)
{
	int ret;

	uq_errclear();
	ret = uq_queue_create_impl(img, depth, out);
	return finish(ret, img->path, "queue create");
}

void uq_queue_destroy(uq_queue *q)
{
	uq_queue_destroy_impl(q);
}

int uq_queue_read(uq_queue *q, void *buf, size_t len, uint64_t off, uq_done_fn cb, void *arg)
{
	int ret;

	uq_errclear();
	ret = uq_queue_read_impl(q, buf, len, off, cb, arg);
	return finish(ret, NULL, "queue read");
}

int uq_queue_poll(uq_queue *q, unsigned min_complete)
{
	int ret;

	uq_errclear();
	ret = uq_queue_poll_impl(q, min_complete);
	return finish(ret, NULL, "queue poll");
}

int uq_snapshot_create(uq_image *img, const char *name)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_snapshot_create_impl(img, name);
	return finish(ret, img->path, "snapshot create");
}

int uq_snapshot_apply(uq_image *img, const char *name_or_id)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_snapshot_apply_impl(img, name_or_id);
	return finish(ret, img->path, "snapshot apply");
}

int uq_snapshot_delete(uq_image *img, const char *name_or_id)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_snapshot_delete_impl(img, name_or_id);
	return finish(ret, img->path, "snapshot delete");
}

int uq_snapshot_view(uq_image *img, const char *name_or_id)
{
	int ret;

	uq_errclear();
	ret = uq_snapshot_view_impl(img, name_or_id);
	return finish(ret, img->path, "snapshot view");
}

int uq_check(uq_image *img, unsigned flags, struct uq_check_result *res)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_check_impl(img, flags, res);
	return finish(ret, img->path, "check");
}

int uq_get_stats(uq_image *img, struct uq_stats *out)
{
	struct uq_stats full = { .struct_size = sizeof(full) };
	int ret;

	uq_errclear();
	if (!out || out->struct_size < sizeof(out->struct_size))
		return uq_seterr(-EINVAL, "uq_get_stats: struct_size is not set");
	ret = uq_get_stats_impl(img, &full);
	if (ret == 0)
		copy_out(out, &full, out->struct_size, sizeof(full));
	return finish(ret, img->path, "stats");
}

int uq_reset_stats(uq_image *img)
{
	uq_errclear();
	return finish(uq_reset_stats_impl(img), img->path, "reset stats");
}

int uq_bitmap_get(uq_image *img, uint32_t idx, struct uq_bitmap_info *out)
{
	struct uq_bitmap_info full = { .struct_size = sizeof(full) };
	int ret;

	uq_errclear();
	if (!out || out->struct_size < sizeof(out->struct_size))
		return uq_seterr(-EINVAL, "uq_bitmap_get: struct_size is not set");
	ret = uq_bitmap_get_impl(img, idx, &full);
	if (ret == 0)
		copy_out(out, &full, out->struct_size, sizeof(full));
	return finish(ret, img->path, "bitmap info");
}

int uq_bitmap_add(uq_image *img, const char *name, uint32_t granularity, int enabled)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_bitmap_add_impl(img, name, granularity, enabled);
	return finish(ret, img->path, "bitmap add");
}

int uq_bitmap_remove(uq_image *img, const char *name)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_bitmap_remove_impl(img, name);
	return finish(ret, img->path, "bitmap remove");
}

int uq_bitmap_clear(uq_image *img, const char *name)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_bitmap_clear_impl(img, name);
	return finish(ret, img->path, "bitmap clear");
}

int uq_bitmap_enable(uq_image *img, const char *name, int enabled)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_bitmap_enable_impl(img, name, enabled);
	return finish(ret, img->path, enabled ? "bitmap enable" : "bitmap disable");
}

int uq_bitmap_merge(uq_image *img, const char *name, uq_image *src, const char *src_name)
{
	int ret;

	uq_errclear();
	ret = uq_settle(img);
	if (ret == 0)
		ret = uq_bitmap_merge_impl(img, name, src, src_name);
	return finish(ret, img->path, "bitmap merge");
}

int uq_bitmap_status(uq_image *img, const char *name, uint64_t off, uint64_t len,
		     uint64_t *run, int *dirty)
{
	int ret;

	uq_errclear();
	ret = uq_bitmap_status_impl(img, name, off, len, run, dirty);
	return finish(ret, img->path, "bitmap status");
}
