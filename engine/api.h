/* SPDX-License-Identifier: MIT */
/* The engine's implementations of the public calls; api.c wraps each
 * one (error message, struct_size) under the public name. Engine code
 * calls these, never the public names, so a call made inside another
 * never clears the outer call's message. */
#ifndef UQ_API_H
#define UQ_API_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "uqcow.h"

int uq_open_impl(const char *path, const struct uq_open_opts *opts, uq_image **out);
int uq_close_impl(uq_image *img);
int uq_get_stats_impl(uq_image *img, struct uq_stats *out);
int uq_reset_stats_impl(uq_image *img);
int uq_get_info_impl(uq_image *img, struct uq_info *out);
uq_image *uq_backing_impl(uq_image *img);
int uq_snapshot_get_impl(uq_image *img, uint32_t idx, struct uq_snapshot_info *out);
int uq_block_status_impl(uq_image *img, uint64_t off, uint64_t len, struct uq_extent *ext);
int uq_aio_read_impl(uq_image *img, void *buf, size_t len, uint64_t off, uq_done_fn cb, void *arg);
int uq_poll_impl(uq_image *img, unsigned min_complete);
ssize_t uq_pread_impl(uq_image *img, void *buf, size_t len, uint64_t off);
int uq_create_impl(const char *path, const struct uq_create_opts *opts);
int uq_aio_write_impl(uq_image *img, const void *buf, size_t len, uint64_t off, unsigned flags, uq_done_fn cb, void *arg);
int uq_aio_write_zeroes_impl(uq_image *img, uint64_t off, uint64_t len, unsigned flags, uq_done_fn cb, void *arg);
int uq_aio_discard_impl(uq_image *img, uint64_t off, uint64_t len, uq_done_fn cb, void *arg);
int uq_aio_flush_impl(uq_image *img, uq_done_fn cb, void *arg);
ssize_t uq_pwrite_impl(uq_image *img, const void *buf, size_t len, uint64_t off, unsigned flags);
int uq_write_zeroes_impl(uq_image *img, uint64_t off, uint64_t len, unsigned flags);
int uq_discard_impl(uq_image *img, uint64_t off, uint64_t len);
int uq_flush_impl(uq_image *img);
int uq_resize_impl(uq_image *img, uint64_t size);
int uq_amend_refcount_bits_impl(uq_image *img, uint32_t bits);
int uq_amend_impl(uq_image *img, const struct uq_amend_opts *o);
int uq_queue_create_impl(uq_image *img, unsigned depth, uq_queue **out);
void uq_queue_destroy_impl(uq_queue *q);
int uq_queue_read_impl(uq_queue *q, void *buf, size_t len, uint64_t off, uq_done_fn cb, void *arg);
int uq_queue_poll_impl(uq_queue *q, unsigned min_complete);
int uq_snapshot_create_impl(uq_image *img, const char *name);
int uq_snapshot_apply_impl(uq_image *img, const char *name_or_id);
int uq_snapshot_delete_impl(uq_image *img, const char *name_or_id);
int uq_snapshot_view_impl(uq_image *img, const char *name_or_id);
int uq_bitmap_get_impl(uq_image *img, uint32_t idx, struct uq_bitmap_info *out);
int uq_bitmap_add_impl(uq_image *img, const char *name, uint32_t granularity, int enabled);
int uq_bitmap_remove_impl(uq_image *img, const char *name);
int uq_bitmap_clear_impl(uq_image *img, const char *name);
int uq_bitmap_enable_impl(uq_image *img, const char *name, int enabled);
int uq_bitmap_merge_impl(uq_image *img, const char *name, uq_image *src, const char *src_name);
int uq_bitmap_status_impl(uq_image *img, const char *name, uint64_t off, uint64_t len,
			  uint64_t *run, int *dirty);
int uq_check_impl(uq_image *img, unsigned flags, struct uq_check_result *res);

#endif
