// SPDX-License-Identifier: MIT
/* Changes to the header of an open image, field by field at the offsets
 * format.h names: the dirty and corrupt bits, autoclear bits, sizes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "header.h"
#include "stats.h"

int uq_header_write_field(uq_image *img, size_t off, const void *p, size_t len)
{
	int ret = uq_meta_pwrite(img, UQ_MK_HEADER, p, len, off);

	if (ret < 0)
		uq_seterr(ret, "%s: writing the header failed: %s", img->path, strerror(-ret));
	return ret;
}

int uq_header_write_u32(uq_image *img, size_t off, uint32_t v)
{
	uint8_t f[4];

	uq_put_be32(f, v);
	return uq_header_write_field(img, off, f, sizeof(f));
}

int uq_header_write_u64(uq_image *img, size_t off, uint64_t v)
{
	uint8_t f[8];

	uq_put_be64(f, v);
	return uq_header_write_field(img, off, f, sizeof(f));
}

int uq_header_write_size_l1(uq_image *img, uint64_t size, uint32_t l1_size, uint64_t l1_off)
{
	uint8_t f[24];

	/* size, crypt_method, l1_size, l1_table_offset: contiguous, one write */
	uq_put_be64(f, size);
	uq_put_be32(f + 8, img->h.crypt_method);
	uq_put_be32(f + 12, l1_size);
	uq_put_be64(f + 16, l1_off);
	return uq_header_write_field(img, QCOW_HDR_SIZE, f, sizeof(f));
}

int uq_header_set_dirty(uq_image *img, bool on)
{
	uint64_t v = on ? img->h.incompatible_features | QCOW_INCOMPAT_DIRTY
			: img->h.incompatible_features & ~QCOW_INCOMPAT_DIRTY;
	int ret;

	if (v == img->h.incompatible_features)
		return 0;
	ret = uq_header_write_u64(img, QCOW_HDR_INCOMPAT, v);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret == 0)
		img->h.incompatible_features = v;
	return ret;
}

int uq_mark_corrupt(uq_image *img, const char *what, uint64_t host_off)
{
	/* v2 has no feature bits: refusing the write is all it can get */
	if (img->h.version >= 3) {
		img->h.incompatible_features |= QCOW_INCOMPAT_CORRUPT;
		if (uq_header_write_u64(img, QCOW_HDR_INCOMPAT, img->h.incompatible_features) == 0)
			io_fsync(img->file);
	}
	uq_stop_writes(img, "the image is marked corrupt");
	return uq_seterr(-EIO, "%s: refusing to write %s over metadata at 0x%llx; "
			 "the image is now marked corrupt", img->path, what,
			 (unsigned long long)host_off);
}

/* ---- the bitmaps extension ---- */

/* Rebuild the header cluster's extension area with the bitmaps extension
 * set (nb > 0) or removed: the other extensions are kept as they are and
 * the backing file name moves behind them. One write, as qemu does. */
static int rebuild_exts(uq_image *img, uint32_t nb, uint64_t dsize, uint64_t doff)
{
	uint64_t cs = img->g.cluster_size, hl = img->h.header_length, pos = hl, used;
	uint64_t boff = img->h.backing_file_offset, bsize = img->h.backing_file_size;
	uint64_t autoclear = nb ? img->h.autoclear_features | QCOW_AUTOCLEAR_BITMAPS
				: img->h.autoclear_features & ~QCOW_AUTOCLEAR_BITMAPS;
	uint64_t len = img->file_size < cs ? img->file_size : cs;
	uint8_t *old = calloc(1, (size_t)cs), *buf = calloc(1, (size_t)cs);
	struct uq_exts *e = calloc(1, sizeof(*e));
	int ret;

	if (!old || !buf || !e) {
		ret = -ENOMEM;
		goto out;
	}
	ret = uq_meta_pread(img, UQ_MK_HEADER, old, (size_t)len, 0);
	if (ret < 0)
		goto out;
	memcpy(buf, old, (size_t)hl);
	/* The feature name table only names bits: like qemu, leave it out
	 * when the cluster (512 bytes, say) has no room for it. */
	for (int keep_names = 1; keep_names >= 0; keep_names--) {
		uint64_t need = hl + (nb ? 32 : 0) + 8 + (boff ? bsize : 0);

		pos = hl;
		/* uq_exts_decode walked this area at open: each one fits */
		for (uint64_t off = hl; off + 8 <= img->exts->end;) {
			uint32_t type = uq_be32(old + off), n = uq_be32(old + off + 4);
			uint64_t step = 8 + (((uint64_t)n + 7) & ~7ull);

			if (type == QCOW_EXT_END || off + step > cs)
				break;
			if (type != QCOW_EXT_BITMAPS &&
			    (keep_names || type != QCOW_EXT_FEATURES)) {
				if (pos + step + need - hl <= cs)
					memcpy(buf + pos, old + off, (size_t)step);
				pos += step;
			}
			off += step;
		}
		if (pos + need - hl <= cs)
			break;
		if (!keep_names) {
			ret = uq_seterr(-ENOSPC, "%s: no room for the bitmaps extension in "
					"the header cluster", img->path);
			goto out;
		}
	}
	memset(buf + pos, 0, (size_t)(cs - pos));
	if (nb) {
		uq_put_be32(buf + pos, QCOW_EXT_BITMAPS);
		uq_put_be32(buf + pos + 4, 24);
		uq_put_be32(buf + pos + 8, nb);
		uq_put_be64(buf + pos + 16, dsize);
		uq_put_be64(buf + pos + 24, doff);
		pos += 32;
	}
	pos += 8;                 /* the end marker: zeros */
	if (boff) {
		memcpy(buf + pos, old + boff, (size_t)bsize);
		uq_put_be64(buf + QCOW_HDR_BACKING_OFFSET, pos);
		boff = pos;
		pos += bsize;
	}
	uq_put_be64(buf + QCOW_HDR_AUTOCLEAR, autoclear);
	used = img->exts->end;
	/* backing_file_size means nothing without an offset (qemu ignores
	 * it too); counted, it wrote past the one-cluster buffer */
	if (boff && img->h.backing_file_offset + bsize > used)
		used = img->h.backing_file_offset + bsize;
	if (pos > used)
		used = pos;
	ret = uq_header_write_field(img, 0, buf, (size_t)used);
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret < 0)
		goto out;
	img->h.backing_file_offset = boff;
	img->h.autoclear_features = autoclear;
	ret = uq_exts_decode(buf, (size_t)cs, &img->h, e);
	if (ret == 0)
		memcpy(img->exts, e, sizeof(*e));
out:
	free(old);
	free(buf);
	free(e);
	return ret;
}

int uq_header_bitmaps_ext(uq_image *img, uint32_t nb, uint64_t dsize, uint64_t doff)
{
	uint64_t at = img->exts->bitmaps_at, ac = img->h.autoclear_features;
	/* a sector is written whole or not at all: one inside a sector
	 * switches directories atomically */
	bool atomic = at / 512 == (at + 23) / 512;
	uint8_t f[24] = { 0 };
	int ret = 0;

	if (!nb || !img->exts->has_bitmaps || !at)
		return rebuild_exts(img, nb, dsize, doff);
	uq_put_be32(f, nb);
	uq_put_be64(f + 8, dsize);
	uq_put_be64(f + 16, doff);
	if (!atomic && (ac & QCOW_AUTOCLEAR_BITMAPS)) {
		/* torn, it would name garbage: invalidate the bitmaps meanwhile */
		ret = uq_header_write_u64(img, QCOW_HDR_AUTOCLEAR, ac & ~QCOW_AUTOCLEAR_BITMAPS);
		if (ret == 0)
			ret = io_fsync(img->file);
		ac &= ~QCOW_AUTOCLEAR_BITMAPS;
	}
	if (ret == 0)
		ret = uq_header_write_field(img, at, f, sizeof(f));
	if (ret == 0)
		ret = io_fsync(img->file);
	if (ret == 0 && !(ac & QCOW_AUTOCLEAR_BITMAPS)) {
		ac |= QCOW_AUTOCLEAR_BITMAPS;
		ret = uq_header_write_u64(img, QCOW_HDR_AUTOCLEAR, ac);
		if (ret == 0)
			ret = io_fsync(img->file);
	}
	if (ret < 0)
		return ret;
	img->h.autoclear_features = ac;
	img->exts->nb_bitmaps = nb;
	img->exts->bitmap_directory_size = dsize;
	img->exts->bitmap_directory_offset = doff;
	return 0;
}
