// SPDX-License-Identifier: MIT
/* Persistent dirty bitmaps of an open image: the directory, the bits of
 * enabled bitmaps kept in memory while the image is open for writing,
 * and the crash-safe write back (new data and tables, new directory, the
 * header switch, then the old clusters freed). See bitmap.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "error.h"
#include "header.h"
#include "overlap.h"
#include "stats.h"
#include "walk.h"

static uint64_t csz(const uq_image *img) { return img->g.cluster_size; }

/* Are the bitmaps of this image to be read at all? Only v3 has the
 * autoclear bit, and without it a program that didn't maintain them has
 * written the image since: qemu ignores them then, and so do we. */
static bool bitmaps_valid(const uq_image *img)
{
	return img->h.version >= 3 && img->exts->has_bitmaps &&
	       (img->h.autoclear_features & QCOW_AUTOCLEAR_BITMAPS);
}

static void free_list(struct uq_bm *list, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		free(list[i].name);
		free(list[i].data);
	}
	free(list);
}

void uq_bm_release(uq_image *img)
{
	free_list(img->bm.list, img->bm.n);
	img->bm.list = NULL;
	img->bm.n = img->bm.tracking = 0;
	img->bm.mem = 0;
}

struct uq_bm *uq_bm_find(uq_image *img, const char *name)
{
	for (uint32_t i = 0; i < img->bm.n; i++)
		if (!strcmp(img->bm.list[i].name, name))
			return &img->bm.list[i];
	return NULL;
}

/* Parse a directory buffer into a list; every entry validated. */
static int parse_dir(uq_image *img, const uint8_t *dir, uint64_t dsize, uint32_t nb,
		     struct uq_bm **out)
{
	struct uq_bm *list = calloc(nb, sizeof(*list));
	uint64_t pos = 0;
	uint32_t i;
	int ret = 0;

	if (!list)
		return -ENOMEM;
	for (i = 0; i < nb && ret == 0; i++) {
		struct uq_bmentry e;

		ret = uq_bmentry_decode(dir + pos, (size_t)(dsize - pos), csz(img), img->size,
					img->file_size, &e);
		if (ret < 0) {
			uq_seterr(ret, "bitmap directory entry %u: %s", i, uq_errmsg());
			break;
		}
		list[i].name = strndup((const char *)e.name, e.name_len);
		if (!list[i].name) {
			ret = -ENOMEM;
			break;
		}
		list[i].name_len = e.name_len;
		list[i].flags = e.flags;
		list[i].gran_bits = e.gran_bits;
		list[i].table_off = e.table_off;
		list[i].table_size = e.table_size;
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(list[j].name, list[i].name))
				ret = uq_seterr(-EINVAL, "bitmap directory: the name '%s' "
						"appears twice", list[i].name);
		pos += e.entry_len;
	}
	if (ret == 0 && pos != dsize)
		ret = uq_seterr(-EINVAL, "bitmap directory: %u entries end at %" PRIu64
				" of %" PRIu64 " bytes (nb_bitmaps is wrong or the directory "
				"is broken)", nb, pos, dsize);
	if (ret < 0) {
		free_list(list, nb);
		return ret;
	}
	*out = list;
	return 0;
}

int uq_bm_load_dir(uq_image *img)
{
	const struct uq_exts *e = img->exts;
	uint64_t dsize = e->bitmap_directory_size;
	uint8_t *dir;
	int ret;

	if (!bitmaps_valid(img))
		return 0;
	/* the extension decoder bounded the size, open checked it lies
	 * inside the file */
	dir = malloc(dsize ? (size_t)dsize : 1);
	if (!dir)
		return -ENOMEM;
	ret = dsize ? uq_meta_pread(img, UQ_MK_BITMAP_DIR, dir, (size_t)dsize, e->bitmap_directory_offset)
		    : uq_seterr(-EINVAL, "bitmap_directory_size is 0");
	if (ret < 0 && ret != -EINVAL)
		uq_seterr(ret, "reading the bitmap directory: %s", strerror(-ret));
	if (ret == 0)
		ret = parse_dir(img, dir, dsize, e->nb_bitmaps, &img->bm.list);
	free(dir);
	if (ret == 0) {
		img->bm.n = e->nb_bitmaps;
		return 0;
	}
	if (ret == -ENOMEM)
		return ret;
	if ((img->flags & UQ_OPEN_RDWR) && !(img->flags & UQ_OPEN_REPAIR))
		return uq_seterr(ret, "bitmaps: %s; refusing to write an image whose bitmaps "
				 "can't be kept (open it read-only to read it)", uq_errmsg());
	/* read-only: the guest data is fine; say why no bitmaps are shown */
	img->bm.bad = true;
	snprintf(img->bm.why, sizeof(img->bm.why), "%s", uq_errmsg());
	uq_errclear();
	return 0;
}

/* ---- bits in memory ---- */

void uq_bm_set_range(struct uq_bm *b, uint64_t vsize, uint64_t off, uint64_t len)
{
	uint64_t first, last;

	if (!len || off >= vsize)
		return;
	if (len > vsize - off)
		len = vsize - off;
	first = off >> b->gran_bits;
	last = (off + len - 1) >> b->gran_bits;
	for (; first <= last && (first & 7); first++)
		b->data[first >> 3] |= (uint8_t)(1u << (first & 7));
	if (first <= last) {
		uint64_t whole = (last + 1 - first) >> 3;

		memset(b->data + (first >> 3), 0xff, (size_t)whole);
		first += whole << 3;
	}
	for (; first <= last; first++)
		b->data[first >> 3] |= (uint8_t)(1u << (first & 7));
	b->changed = true;
}

void uq_bm_dirty_range(uq_image *img, uint64_t off, uint64_t len)
{
	for (uint32_t i = 0; i < img->bm.n; i++)
		if (img->bm.list[i].track)
			uq_bm_set_range(&img->bm.list[i], img->size, off, len);
}

int uq_bm_load_data(uq_image *img, struct uq_bm *b)
{
	uint64_t cs = csz(img), bytes = uq_bm_data_bytes(img->size, b->gran_bits);
	uint64_t *t = NULL, nbits = (img->size + (1ull << b->gran_bits) - 1) >> b->gran_bits;
	uint8_t *data;
	int ret = 0;

	if (b->data)
		return 0;
	if (b->flags & QCOW_BMF_IN_USE)
		return uq_seterr(-EINVAL, "bitmap '%s' is inconsistent (in use): remove it",
				 b->name);
	if (bytes > QCOW_BM_MAX_DATA || img->bm.mem + bytes > UQ_BM_MEM_MAX)
		return uq_seterr(-EFBIG, "bitmap '%s': %" PRIu64 " bytes of bits is more than "
				 "uqcow keeps in memory", b->name, bytes);
	data = calloc(1, bytes ? (size_t)bytes : 1);
	if (!data)
		return -ENOMEM;
	if (b->table_off) {
		/* uq_bmentry_decode matched the table to the size */
		ret = uq_read_table64(img, UQ_MK_BITMAP_TABLE, b->table_off, b->table_size, &t);
		if (ret < 0)
			uq_seterr(ret, "bitmap '%s': reading its table failed: %s", b->name,
				  strerror(-ret));
	}
	for (uint32_t i = 0; ret == 0 && t && i < b->table_size; i++) {
		uint64_t d, n = bytes - (uint64_t)i * cs < cs ? bytes - (uint64_t)i * cs : cs;

		ret = uq_bmtable_entry_decode(t[i], cs, &d);
		if (ret < 0) {
			uq_seterr(ret, "bitmap '%s': %s", b->name, uq_errmsg());
			break;
		}
		if (d && (d >= img->file_size || img->file_size - d < cs))
			ret = uq_seterr(-EINVAL, "bitmap '%s': data cluster 0x%" PRIx64 " lies "
					"past the end of the file", b->name, d);
		else if (d)
			ret = uq_meta_pread(img, UQ_MK_BITMAP_DATA, data + (uint64_t)i * cs, (size_t)n, d);
		else if (t[i] & QCOW_BME_ALL_ONES)
			memset(data + (uint64_t)i * cs, 0xff, (size_t)n);
	}
	free(t);
	if (ret < 0) {
		free(data);
		return ret;
	}
	/* bits past the disk must read as zero: the next write keeps them so */
	if (nbits & 7)
		data[bytes - 1] &= (uint8_t)((1u << (nbits & 7)) - 1);
	b->data = data;
	b->data_bytes = bytes;
	img->bm.mem += bytes;
	return 0;
}

/* ---- writing back ---- */

static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* New clusters for b's bits and table; its table_off changes to them. */
static int write_bitmap(uq_image *img, struct uq_bm *b)
{
	uint64_t cs = csz(img), n = uq_bm_table_entries(img->size, b->gran_bits, cs);
	uint64_t tbytes = (n * 8 + cs - 1) / cs * cs, toff, *t;
	uint8_t *buf = malloc((size_t)cs);
	int ret = 0;

	t = calloc(n ? n : 1, 8);
	if (!t || !buf) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < n && ret == 0; i++) {
		uint64_t at = i * cs, len = b->data_bytes - at < cs ? b->data_bytes - at : cs, d;

		if (all_zero(b->data + at, (size_t)len))
			continue;             /* entry 0: reads as zeros */
		memset(buf, 0, (size_t)cs);
		memcpy(buf, b->data + at, (size_t)len);
		ret = uq_rc_alloc(img, 1, &d);
		if (ret == 0)
			ret = uq_meta_add(img, d, cs);
		if (ret == 0)
			ret = uq_meta_pwrite(img, UQ_MK_BITMAP_DATA, buf, (size_t)cs, d);
		t[i] = d;
	}
	if (ret == 0)
		ret = uq_rc_alloc(img, tbytes / cs, &toff);
	if (ret == 0)
		ret = uq_meta_add(img, toff, tbytes);
	if (ret == 0)
		ret = uq_write_table64(img, UQ_MK_BITMAP_TABLE, toff, t, n, tbytes);
	if (ret == 0) {
		b->table_off = toff;
		b->table_size = (uint32_t)n;
		b->changed = false;
	}
out:
	free(t);
	free(buf);
	return ret;
}

/* Queue the clusters of a table and the data it names for freeing. */
static int free_table(uq_image *img, uint64_t off, uint32_t size)
{
	uint64_t cs = csz(img), *t;
	int ret;

	if (!off)
		return 0;
	ret = uq_read_table64(img, UQ_MK_BITMAP_TABLE, off, size, &t);
	for (uint32_t i = 0; ret == 0 && i < size; i++) {
		uint64_t d;

		if (uq_bmtable_entry_decode(t[i], cs, &d) == 0 && d)
			ret = uq_rc_free_later(img, d, cs);
	}
	if (ret == 0)
		free(t);
	return ret ? ret : uq_rc_free_later(img, off, (uint64_t)size * 8);
}

static int sync_refcounts(uq_image *img)
{
	int ret = uq_rc_write_dirty(img);

	return ret ? ret : io_fsync(img->file);
}

int uq_bm_commit(uq_image *img, const uint64_t *free_off, const uint64_t *free_len,
		 size_t nfree)
{
	struct uq_bm *l = img->bm.list;
	uint64_t cs = csz(img), dsize = 0, doff = 0, old_doff, old_dsize;
	uint64_t *old_off = calloc(img->bm.n ? img->bm.n : 1, 8);
	uint32_t *old_size = calloc(img->bm.n ? img->bm.n : 1, 4);
	bool had = bitmaps_valid(img);
	uint8_t *dir = NULL;
	int ret;

	if (!old_off || !old_size) {
		ret = -ENOMEM;
		goto out;
	}
	/* guest metadata first: the free queue must be ours alone below */
	ret = uq_meta_flush(img);
	for (uint32_t i = 0; ret == 0 && i < img->bm.n; i++) {
		old_off[i] = l[i].changed ? l[i].table_off : 0;
		old_size[i] = l[i].table_size;
		if (l[i].changed)
			ret = write_bitmap(img, &l[i]);
	}
	for (uint32_t i = 0; i < img->bm.n; i++)
		dsize += uq_bmentry_len(l[i].name_len);
	if (ret == 0 && dsize > QCOW_BM_DIR_MAX)
		ret = uq_seterr(-EFBIG, "%s: the bitmap directory would exceed %llu bytes",
				img->path, QCOW_BM_DIR_MAX);
	if (ret == 0 && dsize) {
		uint64_t dbytes = (dsize + cs - 1) / cs * cs, pos = 0;

		dir = calloc(1, (size_t)dbytes);
		if (!dir)
			ret = -ENOMEM;
		for (uint32_t i = 0; ret == 0 && i < img->bm.n; i++) {
			struct uq_bmentry e = { .table_off = l[i].table_off,
						.table_size = l[i].table_size,
						.flags = l[i].flags, .gran_bits = l[i].gran_bits,
						.name_len = l[i].name_len,
						.name = (const uint8_t *)l[i].name };

			uq_bmentry_encode(&e, dir + pos);
			pos += uq_bmentry_len(l[i].name_len);
		}
		if (ret == 0)
			ret = uq_rc_alloc(img, dbytes / cs, &doff);
		if (ret == 0)
			ret = uq_meta_add(img, doff, dbytes);
		if (ret == 0)
			ret = uq_meta_pwrite(img, UQ_MK_BITMAP_DIR, dir, (size_t)dbytes, doff);
	}
	/* bits, tables, directory and their refcounts durable before the
	 * header names them */
	if (ret == 0)
		ret = sync_refcounts(img);
	old_doff = img->exts->bitmap_directory_offset;
	old_dsize = img->exts->bitmap_directory_size;
	if (ret == 0)
		ret = uq_header_bitmaps_ext(img, img->bm.n, dsize, doff);
	if (ret < 0) {
		uq_stop_writes(img, "writing bitmaps failed");
		goto out;
	}
	/* the header names the new ones: the old ones can go */
	for (uint32_t i = 0; ret == 0 && i < img->bm.n; i++)
		ret = free_table(img, old_off[i], old_size[i]);
	for (size_t i = 0; ret == 0 && i < nfree; i++)
		ret = free_table(img, free_off[i], (uint32_t)free_len[i]);
	if (ret == 0 && had && old_dsize)
		ret = uq_rc_free_later(img, old_doff, old_dsize);
	if (ret == 0)
		ret = uq_rc_apply_frees(img, NULL);
	if (ret == 0)
		ret = sync_refcounts(img);
	if (ret < 0)
		uq_stop_writes(img, "freeing old bitmap clusters failed");
out:
	free(old_off);
	free(old_size);
	free(dir);
	if (ret < 0 && !*uq_errmsg())
		uq_seterr(ret, "%s: writing bitmaps failed: %s", img->path, strerror(-ret));
	return ret;
}

int uq_bm_start(uq_image *img)
{
	bool mark = false;
	int ret = 0;

	if (img->bm.bad || !img->bm.n)
		return 0;
	for (uint32_t i = 0; ret == 0 && i < img->bm.n; i++) {
		struct uq_bm *b = &img->bm.list[i];

		/* disabled and inconsistent bitmaps stay as they are */
		if ((b->flags & (QCOW_BMF_AUTO | QCOW_BMF_IN_USE)) != QCOW_BMF_AUTO)
			continue;
		ret = uq_bm_load_data(img, b);
		if (ret < 0)
			return uq_seterr(ret, "%s; refusing to write an image whose bitmaps "
					 "can't be kept", uq_errmsg());
		b->flags |= QCOW_BMF_IN_USE;
		b->track = true;
		mark = true;
	}
	/* in use on disk before the first guest write: a crash from here
	 * on leaves them marked inconsistent, never silently wrong */
	if (mark)
		ret = uq_bm_commit(img, NULL, NULL, 0);
	if (ret == 0)
		for (uint32_t i = 0; i < img->bm.n; i++)
			img->bm.tracking += img->bm.list[i].track;
	return ret;
}

int uq_bm_finish(uq_image *img)
{
	if (!img->bm.tracking)
		return 0;
	for (uint32_t i = 0; i < img->bm.n; i++) {
		struct uq_bm *b = &img->bm.list[i];

		if (!b->track)
			continue;
		/* bits unchanged since open keep their clusters */
		b->flags &= ~QCOW_BMF_IN_USE;
	}
	img->bm.tracking = 0;
	return uq_bm_commit(img, NULL, NULL, 0);
}

/* ---- resize ---- */

int uq_bm_resize_begin(uq_image *img)
{
	bool any = false;
	int ret = 0;

	for (uint32_t i = 0; ret == 0 && i < img->bm.n; i++) {
		struct uq_bm *b = &img->bm.list[i];

		/* an inconsistent bitmap may have a stale size: it stays so */
		if ((b->flags & QCOW_BMF_IN_USE) && !b->track)
			continue;
		ret = uq_bm_load_data(img, b);
		b->flags |= QCOW_BMF_IN_USE;
		any = true;
	}
	/* in use while the size changes: a crash can't leave a bitmap that
	 * looks valid but doesn't fit the disk */
	return ret < 0 || !any ? ret : uq_bm_commit(img, NULL, NULL, 0);
}

int uq_bm_resize_end(uq_image *img)
{
	bool any = false;

	for (uint32_t i = 0; i < img->bm.n; i++) {
		struct uq_bm *b = &img->bm.list[i];
		uint64_t bytes = uq_bm_data_bytes(img->size, b->gran_bits);
		uint64_t nbits = (img->size + (1ull << b->gran_bits) - 1) >> b->gran_bits;
		uint8_t *d;

		if (!b->data)
			continue;
		d = realloc(b->data, bytes ? (size_t)bytes : 1);
		if (!d)
			return -ENOMEM;
		if (bytes > b->data_bytes)   /* the new part of the disk is clean */
			memset(d + b->data_bytes, 0, (size_t)(bytes - b->data_bytes));
		if (nbits & 7)
			d[bytes - 1] &= (uint8_t)((1u << (nbits & 7)) - 1);
		img->bm.mem = img->bm.mem - b->data_bytes + bytes;
		b->data = d;
		b->data_bytes = bytes;
		b->changed = true;
		if (!b->track)
			b->flags &= ~QCOW_BMF_IN_USE;
		any = true;
	}
	return any ? uq_bm_commit(img, NULL, NULL, 0) : 0;
}
