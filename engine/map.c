// SPDX-License-Identifier: MIT
/* Block status, as qemu-img map reports it: which guest ranges hold data,
 * read as zeros or come from which image of the backing chain. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "internal.h"

static int raw_status(uq_image *img, uint64_t off, uint64_t len, struct uq_extent *e)
{
	uint64_t d, h;
	int ret;

	e->present = 1;
	e->data = 1;
	e->has_offset = 1;
	e->offset = off;
	e->length = len;
	/* Holes read as zeros: report them so map and convert can skip them. */
	ret = io_file_seek_data(img->data, off, &d);
	if (ret < 0 || d > off) {
		uint64_t end = ret < 0 ? off + len : d;

		e->data = 0;
		e->zero = 1;
		e->length = end - off < len ? end - off : len;
		return 0;
	}
	if (io_file_seek_hole(img->data, off, &h) == 0 && h > off && h - off < len)
		e->length = h - off;
	return 0;
}

static int subcluster_state(const struct uq_l2map *m, unsigned sc)
{
	return (m->alloc_mask >> sc & 1) ? 1 : (m->zero_mask >> sc & 1) ? 2 : 0;
}

/* Status of one uniform run starting at off: at most the rest of its
 * cluster (or of its L2 table, if that is unallocated), at most len. */
static int unit_status(uq_image *img, uint64_t off, uint64_t len, struct uq_extent *e)
{
	const struct uq_geom *g = &img->g;
	uint64_t cmask = g->cluster_size - 1;
	uint64_t run = g->cluster_size - (off & cmask);
	struct uq_l2map m;
	int unalloc = 0, ret;

	memset(e, 0, sizeof(*e));
	e->start = off;
	ret = uq_map_entry(img, off, &m);
	if (ret < 0)
		return ret;
	switch (m.type) {
	case UQ_C_NORMAL:
		e->present = e->data = e->has_offset = 1;
		e->offset = m.host_off + (off & cmask);
		break;
	case UQ_C_ZERO:
		e->present = e->zero = 1;
		break;
	case UQ_C_COMPRESSED:
		e->present = e->data = e->compressed = 1;
		break;
	case UQ_C_UNALLOC: {
		/* a missing L2 table covers its whole range */
		uint64_t tspan = g->cluster_size << g->l2_bits;
		uint64_t l1i = (off >> g->cluster_bits) >> g->l2_bits;

		if (l1i >= img->h.l1_size)
			run = len;   /* past the L1 table (a snapshot's view): all of it */
		else if (!img->l1[l1i])
			run = tspan - (off & (tspan - 1));
		unalloc = 1;
		break;
	}
	case UQ_C_SUBCLUSTERS: {
		unsigned sc = (unsigned)((off & cmask) >> g->subcluster_bits), i;
		int st = subcluster_state(&m, sc);

		for (i = sc + 1; i < 32 && subcluster_state(&m, i) == st; i++)
			;
		run = ((uint64_t)i << g->subcluster_bits) - (off & cmask);
		if (st == 1) {
			e->present = e->data = e->has_offset = 1;
			e->offset = m.host_off + (off & cmask);
		} else if (st == 2) {
			e->present = e->zero = 1;
		} else {
			unalloc = 1;
		}
		break;
	}
	}
	if (run > len)
		run = len;
	e->length = run;
	if (!unalloc)
		return 0;
	uq_image *b = img->backing;

	if (!b || off >= b->size) {
		e->zero = 1;   /* nothing below: zeros */
		return 0;
	}
	if (b->size - off < run)
		run = b->size - off;
	ret = uq_block_status_impl(b, off, run, e);
	if (ret < 0)
		return ret;
	e->depth++;
	return 0;
}

static int same(const struct uq_extent *a, const struct uq_extent *b)
{
	if (a->depth != b->depth || a->present != b->present || a->zero != b->zero ||
	    a->data != b->data || a->compressed != b->compressed ||
	    a->has_offset != b->has_offset)
		return 0;
	return !a->has_offset || a->offset + a->length == b->offset;
}

int uq_block_status_impl(uq_image *img, uint64_t off, uint64_t len, struct uq_extent *ext)
{
	struct uq_extent next;
	uint64_t end;
	int ret;

	if (off >= img->size)
		return uq_seterr(-EINVAL, "%s: block status at 0x%llx is past the end",
				 img->path, (unsigned long long)off);
	if (len > img->size - off)
		len = img->size - off;
	memset(ext, 0, sizeof(*ext));
	ext->start = off;
	if (img->fmt != UQ_FMT_QCOW2)
		return raw_status(img, off, len, ext);
	ret = unit_status(img, off, len, ext);
	end = off + len;
	while (ret == 0 && ext->start + ext->length < end) {
		uint64_t pos = ext->start + ext->length;

		ret = unit_status(img, pos, end - pos, &next);
		if (ret < 0 || !same(ext, &next))
			break;
		ext->length += next.length;
	}
	/* A later unit's failure only cuts the extent short. */
	return ext->length ? 0 : ret;
}
