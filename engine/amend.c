// SPDX-License-Identifier: MIT
/* Structural changes in place: amend (compatibility level, refcount
 * width, lazy refcounts, data_file_raw) and resize. New structures are
 * written first, the header last. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "compat.h"
#include "bitmap.h"
#include "error.h"
#include "header.h"
#include "internal.h"
#include "overlap.h"
#include "recount.h"
#include "walk.h"
#include "stats.h"

static int need_writable(uq_image *img)
{
	if (img->fmt != UQ_FMT_QCOW2)
		return uq_seterr(-ENOTSUP, "%s: not a qcow2 image", img->path);
	if (!(img->flags & UQ_OPEN_RDWR) || !img->writable)
		return uq_seterr(-EROFS, "%s: image is not open for writing", img->path);
	return 0;
}

int uq_amend_refcount_bits_impl(uq_image *img, uint32_t bits)
{
	uint64_t cs, n, *counts;
	uint32_t order;
	int ret = need_writable(img);

	if (ret < 0)
		return ret;
	if (!bits || bits > 64 || (bits & (bits - 1)))
		return uq_seterr(-EINVAL, "refcount_bits %u must be a power of two "
				 "between 1 and 64", bits);
	order = (uint32_t)__builtin_ctz(bits);
	if (order == img->h.refcount_order)
		return 0;
	if (img->h.version < 3)
		return uq_seterr(-ENOTSUP, "%s: compat=0.10 images have 16-bit refcounts; "
				 "amend -o compat=1.1 first", img->path);
	/* everything pending reaches the old structures first */
	ret = uq_meta_flush(img);
	if (ret == 0 && img->rc.lazy)
		ret = uq_rc_write_dirty(img);
	if (ret < 0)
		return ret;
	cs = img->g.cluster_size;
	n = (img->alloc.host_end + cs - 1) / cs;
	counts = calloc(n ? n : 1, sizeof(*counts));
	if (!counts)
		return -ENOMEM;
	for (uint64_t c = 0; c < n && ret == 0; c++)
		ret = uq_rc_get(img, c, &counts[c]);
	/* the old refcount structures are free once the header points away */
	for (uint64_t i = 0; i < img->h.refcount_table_clusters && ret == 0; i++)
		if (img->h.refcount_table_offset / cs + i < n)
			counts[img->h.refcount_table_offset / cs + i] = 0;
	for (uint64_t i = 0; i < img->rc.entries && ret == 0; i++)
		if (img->rc.table[i] && img->rc.table[i] / cs < n)
			counts[img->rc.table[i] / cs] = 0;
	if (ret == 0)
		ret = uq_rc_rebuild(img, counts, n, order);
	free(counts);
	return ret;
}

static int set_lazy(uq_image *img, bool on)
{
	uint64_t v = on ? img->h.compatible_features | QCOW_COMPAT_LAZY_REFCOUNTS
			: img->h.compatible_features & ~QCOW_COMPAT_LAZY_REFCOUNTS;
	int ret = uq_meta_flush(img);

	if (v == img->h.compatible_features)
		return ret;
	/* off: what lazy mode held back reaches the disk, the image is
	 * clean, and only then does the header stop promising a repair */
	if (ret == 0 && !on && img->rc.lazy) {
		ret = uq_rc_write_dirty(img);
		if (ret == 0)
			ret = io_fsync(img->file);
		if (ret == 0)
			ret = uq_header_set_dirty(img, false);
	}
	if (ret == 0)
		ret = uq_header_write_u64(img, QCOW_HDR_COMPAT, v);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0)
		return ret;
	img->h.compatible_features = v;
	img->rc.lazy = on;
	return 0;
}

static int clear_data_file_raw(uq_image *img)
{
	uint64_t v = img->h.autoclear_features & ~QCOW_AUTOCLEAR_DATA_FILE_RAW;
	int ret;

	if (v == img->h.autoclear_features)
		return 0;
	ret = uq_meta_flush(img);
	if (ret == 0)
		ret = uq_header_write_u64(img, QCOW_HDR_AUTOCLEAR, v);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret == 0)
		img->h.autoclear_features = v;
	return ret;
}

/* Everything qemu-img refuses, refused before anything is written, in
 * the order qemu-img meets the refusals. */
static int amend_check(uq_image *img, const struct uq_amend_opts *o, uint32_t *bits)
{
	uint32_t cur = img->h.version, want = o->version ? (uint32_t)o->version : cur;

	if (want != 2 && want != 3)
		return uq_seterr(-EINVAL, "Unknown compatibility level %d", o->version);
	*bits = o->refcount_bits ? o->refcount_bits : 1u << img->h.refcount_order;
	if (*bits > 64 || (*bits & (*bits - 1)))
		return uq_seterr(-EINVAL, "Refcount width must be a power of two and may "
				 "not exceed 64 bits");
	if (o->lazy_refcounts < UQ_AMEND_KEEP || o->lazy_refcounts > UQ_AMEND_ON ||
	    o->data_file_raw < UQ_AMEND_KEEP || o->data_file_raw > UQ_AMEND_ON)
		return uq_seterr(-EINVAL, "amend: lazy_refcounts and data_file_raw take "
				 "UQ_AMEND_KEEP, _OFF or _ON");
	if (o->data_file_raw == UQ_AMEND_ON &&
	    !(img->h.autoclear_features & QCOW_AUTOCLEAR_DATA_FILE_RAW))
		return uq_seterr(-EINVAL, "data-file-raw cannot be set on existing images");
	if (*bits != 1u << img->h.refcount_order && want < 3 && *bits != 16)
		return uq_seterr(-EINVAL, "Refcount widths other than 16 bits require "
				 "compatibility level 1.1 or above (use compat=1.1 or "
				 "greater)");
	if (o->lazy_refcounts == UQ_AMEND_ON && want < 3)
		return uq_seterr(-EINVAL, "Lazy refcounts only supported with "
				 "compatibility level 1.1 and above (use compat=1.1 or "
				 "greater)");
	if (want < cur)
		return uq_compat_check_downgrade(img, *bits);
	return 0;
}

int uq_amend_impl(uq_image *img, const struct uq_amend_opts *o)
{
	struct uq_progress p = { o->progress, o->progress_arg };
	uint32_t bits = 0, want;
	int ret = need_writable(img);

	if (ret == 0)
		ret = amend_check(img, o, &bits);
	if (ret < 0)
		return ret;
	want = o->version ? (uint32_t)o->version : img->h.version;
	if (want > img->h.version)
		ret = uq_compat_upgrade(img, &p);
	if (ret == 0 && bits != 1u << img->h.refcount_order)
		ret = uq_amend_refcount_bits_impl(img, bits);
	if (ret == 0 && o->data_file_raw == UQ_AMEND_OFF)
		ret = clear_data_file_raw(img);
	if (ret == 0 && o->lazy_refcounts)
		ret = set_lazy(img, o->lazy_refcounts == UQ_AMEND_ON);
	if (ret == 0 && want < img->h.version)
		ret = uq_compat_downgrade(img, &p);
	if (ret == 0 && p.fn)
		p.fn(p.arg, 1, 1);
	return ret;
}

/* Refuse to cut off anything this image allocates. */
static int tail_is_free(uq_image *img, uint64_t from)
{
	while (from < img->size) {
		struct uq_extent e;
		int ret = uq_block_status_impl(img, from, img->size - from, &e);

		if (ret < 0)
			return ret;
		if (e.present && e.depth == 0)
			return uq_seterr(-ENOTSUP, "%s: can't shrink: guest offset 0x%llx "
					 "holds data (discard it first)", img->path,
					 (unsigned long long)e.start);
		from = e.start + e.length;
	}
	return 0;
}

static int write_size_fields(uq_image *img, uint64_t size, uint32_t l1_size, uint64_t l1_off)
{
	int ret;

	ret = io_fsync(img->file);
	if (ret < 0)
		return ret;
	ret = uq_header_write_size_l1(img, size, l1_size, l1_off);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0)
		uq_stop_writes(img, "a header update failed halfway");
	return ret;
}

static int grow_l1(uq_image *img, uint64_t entries, uint64_t size)
{
	uint64_t cs = img->g.cluster_size, bytes = entries * 8, off;
	uint64_t old_off = img->h.l1_table_offset, old_bytes = (uint64_t)img->h.l1_size * 8;
	uint64_t *l1;
	int ret;

	if (bytes > QCOW_MAX_L1_BYTES)
		return uq_seterr(-EFBIG, "%s: size needs an L1 table over 32 MiB", img->path);
	ret = uq_rc_alloc(img, (bytes + cs - 1) / cs, &off);
	if (ret < 0)
		return ret;
	if (uq_meta_overlaps(img, off, bytes))
		return uq_mark_corrupt(img, "a new L1 table", off);
	l1 = calloc(entries, 8);
	if (!l1)
		return -ENOMEM;
	memcpy(l1, img->l1, old_bytes);
	/* the table and its refcounts are durable before the header names it */
	ret = uq_write_table64(img, UQ_MK_L1, off, l1, entries, (bytes + cs - 1) / cs * cs);
	if (ret == 0)
		ret = uq_meta_flush(img);
	/* lazy refcounts too: the dirty bit is set only once an L2 change
	 * was flushed, and the header switch below is no L2 change */
	if (ret == 0)
		ret = uq_rc_write_dirty(img);
	if (ret == 0)
		ret = write_size_fields(img, size, (uint32_t)entries, off);
	if (ret < 0) {
		free(l1);
		return uq_seterr(ret, "%s: growing the L1 table failed", img->path);
	}
	free(uq_l1_replace(img, l1, (uint32_t)entries, off));
	uq_meta_add(img, off, bytes);
	uq_meta_del(img, old_off, old_bytes);
	if (old_bytes)
		ret = uq_rc_free_later(img, old_off, old_bytes);
	return ret ? ret : uq_meta_flush(img);
}

/* Entries for clusters past the old end belong to no guest byte (a
 * hostile image, or one a tool shrank without clearing them): a grow
 * must not bring their data into the disk. They are unmapped, as if
 * never written, before the new size can reach the disk. Only tables
 * the L1 names are looked at. */
static int drop_past_end(uq_image *img, uint64_t from, uint64_t to)
{
	uint64_t cs = img->g.cluster_size, span = (uint64_t)img->g.l2_entries * cs;
	uint64_t mapped = (uint64_t)img->h.l1_size * span;
	int ret = 0;

	if (to > mapped)
		to = mapped;
	for (uint64_t off = from; off < to && ret == 0;) {
		uint64_t l1i = off / span;
		struct uq_l2map m;

		if (!(img->l1[l1i] & QCOW_L1E_OFFSET_MASK)) {
			off = (l1i + 1) * span;
			continue;
		}
		ret = uq_map_entry(img, off, &m);
		if (ret == 0 && m.type != UQ_C_UNALLOC) {
			ret = uq_l2_set(img, off, 0, 0);
			if (ret == 0)
				ret = uq_mapping_release(img, &m, 0);
		}
		off += cs;
	}
	return ret;
}

int uq_resize_impl(uq_image *img, uint64_t size)
{
	uint64_t entries;
	int ret;

	if (img->fmt == UQ_FMT_RAW) {
		if (!(img->flags & UQ_OPEN_RDWR))
			return uq_seterr(-EROFS, "%s: image is open read-only", img->path);
		ret = io_file_truncate(img->file, size);
		if (ret == 0)
			img->size = img->file_size = size;
		return ret;
	}
	ret = need_writable(img);
	if (ret < 0)
		return ret;
	if (size == img->size)
		return 0;
	/* a v2 snapshot entry may not record its disk size */
	if (img->h.version < 3 && img->snap.n)
		return uq_seterr(-ENOTSUP, "%s: can't resize a v2 image which has snapshots",
				 img->path);
	ret = uq_l1_entries_for(size, img->g.cluster_bits, img->g.extended_l2, &entries);
	if (ret < 0 || size > (1ull << 63) - img->g.cluster_size)
		return uq_seterr(-EFBIG, "%s: size %llu is too large", img->path,
				 (unsigned long long)size);
	/* bitmaps follow the disk's size, as qemu's do */
	ret = uq_bm_resize_begin(img);
	if (ret < 0)
		return ret;
	if (size < img->size) {
		uint64_t keep = (size + img->g.cluster_size - 1) & ~(img->g.cluster_size - 1);

		ret = keep < img->size ? tail_is_free(img, keep) : 0;
		if (ret == 0)
			ret = uq_meta_flush(img);
		if (ret == 0)
			ret = write_size_fields(img, size, img->h.l1_size, img->h.l1_table_offset);
	} else {
		uint64_t cs = img->g.cluster_size;

		ret = drop_past_end(img, (img->size + cs - 1) & ~(cs - 1), size);
		if (ret == 0)
			ret = uq_meta_flush(img);
		if (ret == 0 && entries > img->h.l1_size)
			ret = grow_l1(img, entries, size);
		else if (ret == 0)
			ret = write_size_fields(img, size, img->h.l1_size, img->h.l1_table_offset);
	}
	uint64_t old = img->size;

	if (ret == 0)
		img->size = img->h.size = size;
	/* also after a failure: bitmaps marked in use above are written back */
	int bret = uq_bm_resize_end(img);

	if (ret == 0)
		ret = bret;
	/* The last cluster may hold stale bytes past the old end (a reused
	 * host cluster written only up to the virtual size): they must read
	 * as zeros now that they are inside the image. */
	uint64_t cs = img->g.cluster_size, tail_end = (old + cs - 1) & ~(cs - 1);

	if (ret == 0 && size > old && (old & (cs - 1))) {
		if (tail_end > size)
			tail_end = size;
		ret = uq_write_zeroes_impl(img, old, tail_end - old, 0);
	}
	if (ret == 0 && img->data != img->file &&
	    (img->h.autoclear_features & QCOW_AUTOCLEAR_DATA_FILE_RAW))
		ret = io_file_truncate(img->data, size);
	return ret;
}
