// SPDX-License-Identifier: MIT
/* The bitmap calls of the API (qemu-img bitmap's operations): list, add,
 * remove, clear, enable, disable, merge, and the dirty status of a
 * range. Each change is written through uq_bm_commit before it returns. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "error.h"

static int need_qcow2(uq_image *img)
{
	if (img->fmt != UQ_FMT_QCOW2)
		return uq_seterr(-ENOTSUP, "%s: only qcow2 images have bitmaps", img->path);
	if (img->bm.bad)
		return uq_seterr(-EINVAL, "%s: bitmaps: %s", img->path, img->bm.why);
	return 0;
}

static int need_writable(uq_image *img)
{
	int ret = need_qcow2(img);

	if (ret < 0)
		return ret;
	if (!(img->flags & UQ_OPEN_RDWR))
		return uq_seterr(-EROFS, "%s: image is open read-only", img->path);
	if (!img->writable)
		return uq_seterr(-EROFS, "%s: no more writes: %s", img->path,
				 img->stop_reason ? img->stop_reason : "not open for writing");
	if (img->h.version < 3)
		return uq_seterr(-ENOTSUP, "%s: bitmaps need a v3 (compat=1.1) image",
				 img->path);
	return 0;
}

static int find(uq_image *img, const char *name, struct uq_bm **out)
{
	*out = uq_bm_find(img, name);
	if (!*out)
		return uq_seterr(-ENOENT, "%s: no bitmap named '%s'", img->path, name);
	return 0;
}

/* In use on disk but not tracked by this handle: its bits are stale. */
static int need_consistent(uq_image *img, const struct uq_bm *b)
{
	if ((b->flags & QCOW_BMF_IN_USE) && !b->track)
		return uq_seterr(-EINVAL, "%s: bitmap '%s' is inconsistent (it was in use "
				 "when its writer stopped); remove it", img->path, b->name);
	return 0;
}

int uq_bitmap_get_impl(uq_image *img, uint32_t idx, struct uq_bitmap_info *out)
{
	const struct uq_bm *b;

	if (idx >= img->bm.n)
		return -ENOENT;
	b = &img->bm.list[idx];
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", b->name);
	out->granularity = 1u << b->gran_bits;
	out->flags = (b->flags & QCOW_BMF_IN_USE ? UQ_BITMAP_IN_USE : 0) |
		     (b->flags & QCOW_BMF_AUTO ? UQ_BITMAP_AUTO : 0);
	return 0;
}

int uq_bitmap_add_impl(uq_image *img, const char *name, uint32_t granularity, int enabled)
{
	size_t len = strlen(name);
	unsigned gb;
	struct uq_bm *list, *b;
	uint64_t bytes;
	int ret = need_writable(img);

	if (ret < 0)
		return ret;
	if (!granularity)
		granularity = img->g.cluster_size > 4096 ? (uint32_t)img->g.cluster_size : 4096;
	gb = (unsigned)__builtin_ctz(granularity);
	if (granularity & (granularity - 1))
		return uq_seterr(-EINVAL, "granularity %u is not a power of two", granularity);
	if (gb < QCOW_BM_MIN_GRAN_BITS || gb > QCOW_BM_MAX_GRAN_BITS)
		return uq_seterr(-EINVAL, "granularity %u is outside 512..2G", granularity);
	if (len == 0 || len > QCOW_BM_NAME_MAX)
		return uq_seterr(-EINVAL, "bitmap name must be 1..%u bytes", QCOW_BM_NAME_MAX);
	if (uq_bm_find(img, name))
		return uq_seterr(-EEXIST, "%s: a bitmap named '%s' already exists", img->path,
				 name);
	if (img->bm.n >= QCOW_BM_MAX)
		return uq_seterr(-ENOSPC, "%s: the image has %u bitmaps already", img->path,
				 QCOW_BM_MAX);
	bytes = uq_bm_data_bytes(img->size, gb);
	if (bytes > QCOW_BM_MAX_DATA || img->bm.mem + bytes > UQ_BM_MEM_MAX)
		return uq_seterr(-EFBIG, "%s: the bitmap would take %llu bytes; use a larger "
				 "granularity", img->path, (unsigned long long)bytes);
	list = realloc(img->bm.list, (img->bm.n + 1) * sizeof(*list));
	if (!list)
		return -ENOMEM;
	img->bm.list = list;
	b = &list[img->bm.n];
	memset(b, 0, sizeof(*b));
	b->name = strdup(name);
	b->data = calloc(1, bytes ? (size_t)bytes : 1);
	if (!b->name || !b->data) {
		free(b->name);
		free(b->data);
		return -ENOMEM;
	}
	b->name_len = (uint16_t)len;
	b->gran_bits = (uint8_t)gb;
	b->data_bytes = bytes;
	b->changed = true;
	/* an enabled bitmap is tracked by this handle from now on */
	b->flags = enabled ? QCOW_BMF_AUTO | QCOW_BMF_IN_USE : 0;
	b->track = enabled;
	img->bm.n++;
	img->bm.mem += bytes;
	img->bm.tracking += b->track;
	return uq_bm_commit(img, NULL, NULL, 0);
}

int uq_bitmap_remove_impl(uq_image *img, const char *name)
{
	struct uq_bm *b = NULL;
	uint64_t off, size;
	int ret = need_writable(img);

	if (ret == 0)
		ret = find(img, name, &b);
	if (ret < 0)
		return ret;
	off = b->table_off;
	size = b->table_size;
	img->bm.tracking -= b->track;
	img->bm.mem -= b->data ? b->data_bytes : 0;
	free(b->name);
	free(b->data);
	memmove(b, b + 1, (size_t)(img->bm.list + img->bm.n - (b + 1)) * sizeof(*b));
	img->bm.n--;
	return uq_bm_commit(img, &off, &size, 1);
}

int uq_bitmap_clear_impl(uq_image *img, const char *name)
{
	struct uq_bm *b = NULL;
	int ret = need_writable(img);

	if (ret == 0)
		ret = find(img, name, &b);
	if (ret == 0)
		ret = need_consistent(img, b);
	if (ret == 0)
		ret = uq_bm_load_data(img, b);
	if (ret < 0)
		return ret;
	memset(b->data, 0, (size_t)b->data_bytes);
	b->changed = true;
	return uq_bm_commit(img, NULL, NULL, 0);
}

int uq_bitmap_enable_impl(uq_image *img, const char *name, int enabled)
{
	struct uq_bm *b = NULL;
	int ret = need_writable(img);

	if (ret == 0)
		ret = find(img, name, &b);
	if (ret == 0)
		ret = need_consistent(img, b);
	if (ret == 0 && enabled && !b->track) {
		ret = uq_bm_load_data(img, b);
		if (ret == 0) {
			b->flags |= QCOW_BMF_AUTO | QCOW_BMF_IN_USE;
			b->track = true;
			img->bm.tracking++;
		}
	} else if (ret == 0 && !enabled) {
		b->flags &= ~(QCOW_BMF_AUTO | QCOW_BMF_IN_USE);
		if (b->track)
			img->bm.tracking--;
		b->track = false;
	}
	return ret < 0 ? ret : uq_bm_commit(img, NULL, NULL, 0);
}

int uq_bitmap_merge_impl(uq_image *img, const char *name, uq_image *src,
			 const char *src_name)
{
	struct uq_bm *d = NULL, *s = NULL;
	int ret = need_writable(img);

	if (!src)
		src = img;
	if (ret == 0)
		ret = need_qcow2(src);
	if (ret == 0)
		ret = find(img, name, &d);
	if (ret == 0)
		ret = find(src, src_name, &s);
	if (ret == 0)
		ret = need_consistent(img, d);
	if (ret == 0)
		ret = need_consistent(src, s);
	if (ret == 0 && src->size != img->size)
		ret = uq_seterr(-EINVAL, "bitmaps '%s' and '%s' cover different sizes and "
				"can't be merged", name, src_name);
	if (ret == 0)
		ret = uq_bm_load_data(img, d);
	if (ret == 0)
		ret = uq_bm_load_data(src, s);
	if (ret < 0)
		return ret;
	if (s->gran_bits == d->gran_bits) {
		for (uint64_t i = 0; i < d->data_bytes; i++)
			d->data[i] |= s->data[i];
		d->changed = true;
	} else {
		uint64_t nbits = s->data_bytes * 8;

		for (uint64_t i = 0; i < nbits; i++)
			if (!(i & 7) && !s->data[i >> 3])
				i += 7;       /* a byte of clean granules */
			else if (s->data[i >> 3] & (1u << (i & 7)))
				uq_bm_set_range(d, img->size, i << s->gran_bits,
						1ull << s->gran_bits);
		d->changed = true;
	}
	return uq_bm_commit(img, NULL, NULL, 0);
}

int uq_bitmap_status_impl(uq_image *img, const char *name, uint64_t off, uint64_t len,
			  uint64_t *run, int *dirty)
{
	struct uq_bm *b = NULL;
	uint64_t i, end, g;
	int ret = need_qcow2(img);

	if (ret == 0)
		ret = find(img, name, &b);
	if (ret == 0)
		ret = need_consistent(img, b);
	if (ret == 0)
		ret = uq_bm_load_data(img, b);
	if (ret < 0)
		return ret;
	if (off >= img->size || !len)
		return uq_seterr(-EINVAL, "%s: offset %llu is past the end", img->path,
				 (unsigned long long)off);
	if (len > img->size - off)
		len = img->size - off;
	g = b->gran_bits;
	i = off >> g;
	*dirty = !!(b->data[i >> 3] & (1u << (i & 7)));
	for (end = (i + 1) << g; end < off + len; end += 1ull << g) {
		uint64_t j = end >> g;

		if (!!(b->data[j >> 3] & (1u << (j & 7))) != *dirty)
			break;
	}
	*run = (end < off + len ? end : off + len) - off;
	return 0;
}
