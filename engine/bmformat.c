// SPDX-License-Identifier: MIT
/* Bitmap directory entries and bitmap table entries: pure codecs with
 * every field range-checked (see format.h). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "format.h"

_Static_assert(QCOW_BM_DIR_FIXED == 24, "fixed part of a directory entry");

uint64_t uq_bm_data_bytes(uint64_t vsize, uint32_t gran_bits)
{
	uint64_t bits = (vsize >> gran_bits) + !!(vsize & ((1ull << gran_bits) - 1));

	return (bits + 7) / 8;
}

uint64_t uq_bm_table_entries(uint64_t vsize, uint32_t gran_bits, uint64_t csize)
{
	return (uq_bm_data_bytes(vsize, gran_bits) + csize - 1) / csize;
}

size_t uq_bmentry_len(size_t name_len)
{
	return (QCOW_BM_DIR_FIXED + name_len + 7) & ~(size_t)7;
}

int uq_bmentry_decode(const uint8_t *buf, size_t len, uint64_t csize, uint64_t vsize,
		      uint64_t file_size, struct uq_bmentry *e)
{
	uint64_t full, end;

	memset(e, 0, sizeof(*e));
	if (len < QCOW_BM_DIR_FIXED)
		return uq_seterr(-EINVAL, "entry is cut off by the end of the directory");
	e->table_off = uq_be64(buf);
	e->table_size = uq_be32(buf + 8);
	e->flags = uq_be32(buf + 12);
	e->type = buf[16];
	e->gran_bits = buf[17];
	e->name_len = uq_be16(buf + 18);
	e->extra_len = uq_be32(buf + 20);
	full = ((uint64_t)QCOW_BM_DIR_FIXED + e->extra_len + e->name_len + 7) & ~7ull;
	if (full > len)
		return uq_seterr(-EINVAL, "entry (%" PRIu64 " bytes) runs past the end of "
				 "the directory", full);
	e->entry_len = (size_t)full;
	e->name = buf + QCOW_BM_DIR_FIXED + e->extra_len;
	if (e->name_len == 0 || e->name_len > QCOW_BM_NAME_MAX)
		return uq_seterr(-EINVAL, "name_size %u is outside 1..%u", e->name_len,
				 QCOW_BM_NAME_MAX);
	if (memchr(e->name, 0, e->name_len))
		return uq_seterr(-EINVAL, "name contains a NUL byte");
	/* no extra data is defined; QEMU refuses it too */
	if (e->extra_len)
		return uq_seterr(-ENOTSUP, "extra_data_size %u: bitmap extra data is not "
				 "supported", e->extra_len);
	if (e->type != QCOW_BM_TYPE_DIRTY)
		return uq_seterr(-EINVAL, "type %u is not 1 (dirty tracking)", e->type);
	if (e->flags & ~QCOW_BMF_KNOWN)
		return uq_seterr(-EINVAL, "flags 0x%x has unknown bits", e->flags);
	if (e->gran_bits < QCOW_BM_MIN_GRAN_BITS || e->gran_bits > QCOW_BM_MAX_GRAN_BITS)
		return uq_seterr(-EINVAL, "granularity_bits %u is outside %u..%u", e->gran_bits,
				 QCOW_BM_MIN_GRAN_BITS, QCOW_BM_MAX_GRAN_BITS);
	if (e->table_size == 0 || e->table_size > QCOW_BM_MAX_TABLE)
		return uq_seterr(-EINVAL, "bitmap_table_size %u is outside 1..%u",
				 e->table_size, QCOW_BM_MAX_TABLE);
	if (e->table_off == 0 || (e->table_off & (csize - 1)))
		return uq_seterr(-EINVAL, "bitmap_table_offset 0x%" PRIx64 " is zero or "
				 "not cluster aligned", e->table_off);
	if (__builtin_add_overflow(e->table_off, (uint64_t)e->table_size * 8, &end) ||
	    end > file_size)
		return uq_seterr(-EINVAL, "bitmap table (offset 0x%" PRIx64 ", %u entries) "
				 "extends past the end of the file", e->table_off,
				 e->table_size);
	if ((uint64_t)e->table_size * csize > QCOW_BM_MAX_DATA)
		return uq_seterr(-EFBIG, "bitmap_table_size %u: more than %llu bytes of "
				 "bitmap data", e->table_size, QCOW_BM_MAX_DATA);
	/* an in-use bitmap may be stale in size too (not saved after a
	 * resize): only a consistent one must fit the disk exactly */
	if (!(e->flags & QCOW_BMF_IN_USE) &&
	    e->table_size != uq_bm_table_entries(vsize, e->gran_bits, csize))
		return uq_seterr(-EINVAL, "bitmap_table_size %u doesn't match the virtual "
				 "size (%" PRIu64 " entries at granularity %llu)",
				 e->table_size, uq_bm_table_entries(vsize, e->gran_bits, csize),
				 1ull << e->gran_bits);
	return 0;
}

void uq_bmentry_encode(const struct uq_bmentry *e, uint8_t *buf)
{
	size_t len = uq_bmentry_len(e->name_len);

	memset(buf, 0, len);
	uq_put_be64(buf, e->table_off);
	uq_put_be32(buf + 8, e->table_size);
	uq_put_be32(buf + 12, e->flags);
	buf[16] = QCOW_BM_TYPE_DIRTY;
	buf[17] = e->gran_bits;
	uq_put_be16(buf + 18, e->name_len);
	memcpy(buf + QCOW_BM_DIR_FIXED, e->name, e->name_len);
}

int uq_bmtable_entry_decode(uint64_t entry, uint64_t csize, uint64_t *data_off)
{
	uint64_t off = entry & QCOW_BME_OFFSET_MASK;

	*data_off = 0;
	if (entry & QCOW_BME_RESERVED)
		return uq_seterr(-EINVAL, "bitmap table entry 0x%016" PRIx64 " has reserved "
				 "bits set", entry);
	if (off && (entry & QCOW_BME_ALL_ONES))
		return uq_seterr(-EINVAL, "bitmap table entry 0x%016" PRIx64 " has an offset "
				 "and the all-ones flag", entry);
	if (off & (csize - 1))
		return uq_seterr(-EINVAL, "bitmap table entry 0x%016" PRIx64 " is not "
				 "cluster aligned", entry);
	*data_off = off;
	return 0;
}
