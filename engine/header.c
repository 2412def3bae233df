// SPDX-License-Identifier: MIT
/* Changes to the header of an open image, field by field at the offsets
 * format.h names: the dirty and corrupt bits, autoclear bits, sizes. */
#include <errno.h>
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
