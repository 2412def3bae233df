// SPDX-License-Identifier: MIT
/* Guest clusters to host clusters for writing: the L2 table a write
 * changes (created, or copied where a snapshot shares it), host clusters
 * for data and for compressed bytes, and the references an old mapping
 * gives up once the new one is on disk. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "error.h"
#include "header.h"
#include "overlap.h"

static uint64_t csz(const uq_image *img) { return img->g.cluster_size; }

static uint64_t l2_idx(const uq_image *img, uint64_t off)
{
	return uq_cluster_of(img, off) & (img->g.l2_entries - 1);
}

/* Make the table at l2_off resident (then it can be updated or copied). */
static int l2_load(uq_image *img, uint64_t l2_off)
{
	uint64_t e[2];

	return uq_l2_entry_sync(img, l2_off, 0, e);
}

/* Offset of the L2 table of the guest offset, copied or created so that
 * it can be changed. */
static int l2_for_write(uq_image *img, uint64_t off, uint64_t *out)
{
	uint64_t l1i = uq_cluster_of(img, off) >> img->g.l2_bits;
	uint64_t l2_off = 0, new_off, rc = 1;
	uint8_t *copy = NULL;
	bool copied;
	int ret;

	if (l1i >= img->h.l1_size)
		return uq_seterr(-EINVAL, "%s: guest offset 0x%llx is beyond the L1 table",
				 img->path, (unsigned long long)off);
	ret = uq_l1_decode(&img->g, img->l1[l1i], &l2_off, &copied);
	if (ret < 0)
		return ret;
	/* Keep at most half the cache dirty, counting a table about to become
	 * dirty, so lookups always find a clean slot to evict. A table that
	 * is dirty already costs nothing more. */
	if (!(l2_off && copied && l2c_is_dirty(img->l2c, l2_off)) &&
	    (l2c_dirty_count(img->l2c) + 1) * 2 > l2c_slots(img->l2c)) {
		ret = uq_l2_writeback(img);
		if (ret < 0)
			return ret;
	}
	if (l2_off && !copied) {
		ret = uq_rc_get(img, l2_off >> img->g.cluster_bits, &rc);
		if (ret < 0)
			return ret;
		if (rc == 1) {          /* only the flag was stale */
			img->l1[l1i] = l2_off | QCOW_OFLAG_COPIED;
			img->l1_dirty = true;
			copied = true;
		}
	}
	if (l2_off && copied) {
		*out = l2_off;
		return 0;
	}
	ret = uq_rc_alloc(img, 1, &new_off);
	if (ret < 0)
		return ret;
	if (uq_meta_overlaps(img, new_off, csz(img)))
		return uq_mark_corrupt(img, "a new L2 table", new_off);
	ret = uq_meta_add(img, new_off, csz(img));
	if (ret < 0)
		return ret;
	if (l2_off) {               /* shared with a snapshot: copy it */
		copy = malloc(csz(img));
		if (!copy)
			return -ENOMEM;
		do {
			ret = l2_load(img, l2_off);
			if (ret == 0)
				ret = l2c_copy_out(img->l2c, l2_off, copy);
		} while (ret == -ENOENT);   /* evicted between the two: again */
		if (ret == 0)
			ret = uq_rc_free_later(img, l2_off, csz(img));
	}
	if (ret == 0)
		ret = l2c_install(img->l2c, new_off, copy);
	if (ret == -EBUSY) {            /* every slot dirty: write them out */
		ret = uq_l2_writeback(img);
		if (ret == 0)
			ret = l2c_install(img->l2c, new_off, copy);
	}
	free(copy);
	if (ret < 0)
		return ret;
	l2c_set_dirty(img->l2c, new_off);
	img->l1[l1i] = new_off | QCOW_OFLAG_COPIED;
	img->l1_dirty = true;
	*out = new_off;
	return 0;
}

int uq_l2_set(uq_image *img, uint64_t off, uint64_t entry, uint64_t bitmap)
{
	uint64_t l2_off = 0, v[2] = { entry, bitmap };
	unsigned words = img->g.extended_l2 ? 2 : 1;
	int ret = l2_for_write(img, off, &l2_off);

	/* a reader thread's miss may evict a clean table until the update
	 * marks it dirty: load and try again */
	while (ret == 0) {
		ret = l2c_update(img->l2c, l2_off, l2_idx(img, off), words, v);
		if (ret != -ENOENT)
			break;
		ret = l2_load(img, l2_off);
	}
	return ret;
}

/* Drop the references the old mapping held (after the L2 change lands). */
int uq_mapping_release(uq_image *img, const struct uq_l2map *m, uint64_t keep)
{
	if (img->g.external_data)
		return 0;   /* data clusters of an external file aren't refcounted */
	if (m->type == UQ_C_COMPRESSED)
		return uq_rc_free_later(img, m->comp_off & ~511ull,
					((m->comp_off & 511) + m->comp_len + 511) & ~511ull);
	if (m->host_off && m->host_off != keep)
		return uq_rc_free_later(img, m->host_off, csz(img));
	return 0;
}

/* A host cluster for a guest cluster that needs one. */
int uq_alloc_data(uq_image *img, uint64_t guest_cluster_off, uint64_t *host, bool *fresh)
{
	int ret;

	if (img->g.external_data) {
		/* fixed mapping: guest offset == offset in the data file */
		*host = guest_cluster_off;
		*fresh = false;
		return 0;
	}
	uint64_t written = img->alloc.written_end;   /* allocation moves it */

	ret = uq_rc_alloc(img, 1, host);
	if (ret < 0)
		return ret;
	*fresh = *host >= written;
	if (uq_meta_overlaps(img, *host, csz(img)))
		return uq_mark_corrupt(img, "guest data", *host);
	return 0;
}

uint32_t uq_sc_mask(unsigned first, unsigned last)
{
	uint64_t m = ((2ull << last) - 1) & ~((1ull << first) - 1);

	return (uint32_t)m;
}

/* Subclusters inside the image (the last cluster may be cut short). */
uint32_t uq_sc_in_image(const uq_image *img, uint64_t cstart)
{
	uint64_t scs = 1ull << img->g.subcluster_bits;
	uint64_t n = (img->size - cstart + scs - 1) / scs;

	return n >= 32 ? 0xffffffffu : (uint32_t)((1ull << n) - 1);
}

/* Bytes for a compressed cluster, packed after the previous one; a host
 * cluster holding k of them has refcount k. */
int uq_alloc_compressed(uq_image *img, uint64_t n, uint64_t *off)
{
	uint64_t cs = csz(img), max = uq_refcount_max(img->g.refcount_order);
	uint64_t pos = img->alloc.comp_next, v;
	int ret;

	if (pos && (pos & (cs - 1))) {
		uint64_t cur = pos / cs, rem = cs - (pos & (cs - 1));

		ret = uq_rc_get(img, cur, &v);
		if (ret < 0)
			return ret;
		if (v && v < max && n <= rem) {
			ret = uq_rc_add(img, cur, 1);
			if (ret < 0)
				return ret;
			*off = pos;
			img->alloc.comp_next = pos + n;
			return 0;
		}
	}
	ret = uq_rc_alloc(img, (n + cs - 1) / cs, off);
	if (ret < 0)
		return ret;
	if (uq_meta_overlaps(img, *off, n))
		return uq_mark_corrupt(img, "compressed data", *off);
	img->alloc.comp_next = *off + n;
	return 0;
}

bool uq_reads_zero(const uq_image *img, const struct uq_l2map *m)
{
	return m->type == UQ_C_ZERO || (m->type == UQ_C_UNALLOC && !img->backing);
}
