// SPDX-License-Identifier: MIT
/* qcow2 table codecs: geometry, L1 and L2 entries (standard, compressed,
 * extended), refcount entries of every width, snapshot table entries.
 * No I/O; every decoder validates and returns -errno plus a message. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "format.h"

#define SNAP_FIXED 40u          /* fixed part of a snapshot table entry */

static bool cluster_aligned(uint64_t v, uint64_t csize)
{
	return (v & (csize - 1)) == 0;
}

static uint64_t round_up8(uint64_t v)
{
	return (v + 7) & ~7ull;
}

void uq_geom_init(const struct uq_header *h, struct uq_geom *g)
{
	memset(g, 0, sizeof(*g));
	g->cluster_bits = h->cluster_bits;
	g->cluster_size = 1ull << h->cluster_bits;
	g->extended_l2 = h->incompatible_features & QCOW_INCOMPAT_EXTL2;
	g->l2_entry_bytes = g->extended_l2 ? 16 : 8;
	g->l2_bits = h->cluster_bits - (g->extended_l2 ? 4 : 3);
	g->l2_entries = 1ull << g->l2_bits;
	g->subcluster_bits = g->extended_l2 ? h->cluster_bits - 5
					    : h->cluster_bits;
	g->refcount_order = h->refcount_order;
	g->rb_bits = h->cluster_bits + 3 - h->refcount_order;
	g->csize_shift = 62 - (h->cluster_bits - 8);
	g->csize_mask = (1ull << (h->cluster_bits - 8)) - 1;
	g->coffset_mask = (1ull << g->csize_shift) - 1;
	g->external_data = h->incompatible_features & QCOW_INCOMPAT_DATA_FILE;
	g->v3 = h->version >= 3;
}

int uq_l1_decode(const struct uq_geom *g, uint64_t entry, uint64_t *l2_off,
		 bool *copied)
{
	uint64_t off = entry & QCOW_L1E_OFFSET_MASK;

	if (entry & QCOW_L1E_RESERVED)
		return uq_seterr(-EINVAL, "L1 entry 0x%016" PRIx64 " has "
				 "reserved bits 0x%" PRIx64 " set", entry,
				 (uint64_t)(entry & QCOW_L1E_RESERVED));
	if (!cluster_aligned(off, g->cluster_size))
		return uq_seterr(-EINVAL, "L1 entry L2 table offset 0x%" PRIx64
				 " is not cluster aligned", off);
	*l2_off = off;
	*copied = entry & QCOW_OFLAG_COPIED;
	return 0;
}

static int decode_compressed(const struct uq_geom *g, uint64_t entry,
			     struct uq_l2map *m)
{
	uint64_t off = entry & g->coffset_mask;
	uint64_t sectors = ((entry >> g->csize_shift) & g->csize_mask) + 1;

	if (entry & QCOW_OFLAG_COPIED)
		return uq_seterr(-EINVAL, "compressed L2 entry 0x%016" PRIx64
				 " has the COPIED bit set", entry);
	if (g->external_data)
		return uq_seterr(-EINVAL, "compressed L2 entry 0x%016" PRIx64
				 " in an image with an external data file",
				 entry);
	/* Small clusters leave offset bits above 55 that must be zero. */
	if (off >= QCOW_MAX_HOST_OFFSET)
		return uq_seterr(-EINVAL, "compressed cluster offset 0x%" PRIx64
				 " is not below 2^56", off);
	m->type = UQ_C_COMPRESSED;
	m->comp_off = off;
	m->comp_len = sectors * 512 - (off & 511);
	return 0;
}

int uq_l2_decode(const struct uq_geom *g, uint64_t entry, uint64_t bitmap,
		 struct uq_l2map *m)
{
	uint64_t host = entry & QCOW_L2E_OFFSET_MASK;
	bool copied = entry & QCOW_OFLAG_COPIED;

	memset(m, 0, sizeof(*m));
	if (entry & QCOW_OFLAG_COMPRESSED)
		return decode_compressed(g, entry, m);   /* bitmap unused */

	if (entry & QCOW_L2E_STD_RESERVED)
		return uq_seterr(-EINVAL, "L2 entry 0x%016" PRIx64 " has "
				 "reserved bits 0x%" PRIx64 " set", entry,
				 (uint64_t)(entry & QCOW_L2E_STD_RESERVED));
	if (!cluster_aligned(host, g->cluster_size))
		return uq_seterr(-EINVAL, "L2 entry host offset 0x%" PRIx64
				 " is not cluster aligned", host);
	m->host_off = host;
	m->copied = copied;

	if (g->extended_l2) {
		uint32_t alloc = (uint32_t)bitmap;
		uint32_t zero = (uint32_t)(bitmap >> 32);

		if (entry & QCOW_OFLAG_ZERO)
			return uq_seterr(-EINVAL, "L2 entry 0x%016" PRIx64
					 " has the zero flag (bit 0), reserved "
					 "with extended L2", entry);
		if (alloc & zero)
			return uq_seterr(-EINVAL, "L2 bitmap 0x%016" PRIx64
					 ": subclusters 0x%08x both allocated "
					 "and zero", bitmap, alloc & zero);
		if (alloc && host == 0 && !(g->external_data && copied))
			return uq_seterr(-EINVAL, "L2 bitmap 0x%016" PRIx64
					 " allocates subclusters without a "
					 "host offset", bitmap);
		m->type = UQ_C_SUBCLUSTERS;
		m->alloc_mask = alloc;
		m->zero_mask = zero;
		return 0;
	}

	if (entry & QCOW_OFLAG_ZERO) {
		if (!g->v3)
			return uq_seterr(-EINVAL, "L2 entry 0x%016" PRIx64
					 " has the zero flag in a v2 image",
					 entry);
		m->type = UQ_C_ZERO;    /* host_off may be a preallocation */
		return 0;
	}
	/* Offset 0 is a real mapping only in an external data file. */
	if (host == 0 && !(g->external_data && copied))
		m->type = UQ_C_UNALLOC;
	else
		m->type = UQ_C_NORMAL;
	return 0;
}

uint64_t uq_l2_encode_normal(uint64_t host_off, bool copied)
{
	return (host_off & QCOW_L2E_OFFSET_MASK) |
	       (copied ? QCOW_OFLAG_COPIED : 0);
}

uint64_t uq_l2_encode_compressed(const struct uq_geom *g, uint64_t off,
				 uint64_t len)
{
	/* Sectors touched, counting the partial one holding off. */
	uint64_t sectors = ((off & 511) + len + 511) / 512;

	if (sectors == 0)
		sectors = 1;
	return QCOW_OFLAG_COMPRESSED | (off & g->coffset_mask) |
	       (((sectors - 1) & g->csize_mask) << g->csize_shift);
}

uint64_t uq_refcount_get(const uint8_t *block, uint32_t refcount_order,
			 uint64_t i)
{
	switch (refcount_order) {
	case 0:
	case 1:
	case 2: {
		unsigned bits = 1u << refcount_order;
		unsigned per = 8 >> refcount_order;      /* entries per byte */
		unsigned shift = (unsigned)(i % per) * bits;

		return (block[i / per] >> shift) & ((1u << bits) - 1);
	}
	case 3:
		return block[i];
	case 4:
		return uq_be16(block + i * 2);
	case 5:
		return uq_be32(block + i * 4);
	case 6:
		return uq_be64(block + i * 8);
	default:
		return 0;
	}
}

void uq_refcount_set(uint8_t *block, uint32_t refcount_order, uint64_t i,
		     uint64_t value)
{
	switch (refcount_order) {
	case 0:
	case 1:
	case 2: {
		unsigned bits = 1u << refcount_order;
		unsigned per = 8 >> refcount_order;
		unsigned shift = (unsigned)(i % per) * bits;
		unsigned mask = ((1u << bits) - 1) << shift;
		uint8_t *p = block + i / per;

		*p = (uint8_t)((*p & ~mask) | (((unsigned)value << shift) & mask));
		break;
	}
	case 3:
		block[i] = (uint8_t)value;
		break;
	case 4:
		uq_put_be16(block + i * 2, (uint16_t)value);
		break;
	case 5:
		uq_put_be32(block + i * 4, (uint32_t)value);
		break;
	case 6:
		uq_put_be64(block + i * 8, value);
		break;
	default:
		break;
	}
}

int uq_reftable_decode(const struct uq_geom *g, uint64_t entry,
		       uint64_t *block_off)
{
	uint64_t off = entry & QCOW_REFT_OFFSET_MASK;

	if (entry & QCOW_REFT_RESERVED)
		return uq_seterr(-EINVAL, "refcount table entry 0x%016" PRIx64
				 " has reserved bits 0x%" PRIx64 " set", entry,
				 (uint64_t)(entry & QCOW_REFT_RESERVED));
	if (!cluster_aligned(off, g->cluster_size))
		return uq_seterr(-EINVAL, "refcount block offset 0x%" PRIx64
				 " is not cluster aligned", off);
	*block_off = off;
	return 0;
}

int uq_snapshot_decode(const struct uq_geom *g, const uint8_t *buf, size_t len,
		       uint64_t file_size, struct uq_snapshot_raw *s)
{
	const uint8_t *extra = buf + SNAP_FIXED;
	uint64_t total, padded;
	int ret;

	memset(s, 0, sizeof(*s));
	if (len < SNAP_FIXED)
		return uq_seterr(-EINVAL, "snapshot entry: %zu bytes left, "
				 "fewer than the %u-byte fixed part", len,
				 SNAP_FIXED);
	s->l1_table_offset = uq_be64(buf);
	s->l1_size = uq_be32(buf + 8);
	s->id_len = uq_be16(buf + 12);
	s->name_len = uq_be16(buf + 14);
	s->date_sec = uq_be32(buf + 16);
	s->date_nsec = uq_be32(buf + 20);
	s->vm_clock_nsec = uq_be64(buf + 24);
	s->vm_state_size = uq_be32(buf + 32);
	s->extra_size = uq_be32(buf + 36);

	if (s->extra_size > QCOW_MAX_SNAPSHOT_EXTRA)
		return uq_seterr(-EFBIG, "snapshot extra_size %u exceeds %u",
				 s->extra_size, QCOW_MAX_SNAPSHOT_EXTRA);
	if (g->v3 && s->extra_size < 16)
		return uq_seterr(-EINVAL, "snapshot extra_size %u: v3 needs at "
				 "least 16 (VM state and disk size)",
				 s->extra_size);
	/* All terms are small (< 2^18), so the sum cannot wrap. */
	total = (uint64_t)SNAP_FIXED + s->extra_size + s->id_len + s->name_len;
	if (total > len)
		return uq_seterr(-EINVAL, "snapshot entry (%" PRIu64 " bytes: "
				 "extra_size %u, id_len %u, name_len %u) runs "
				 "past the table (%zu bytes left)", total,
				 s->extra_size, s->id_len, s->name_len, len);
	/* The last entry's padding may be cut off by the end of the file;
	 * capping keeps the caller's "len - entry_len" from wrapping. */
	padded = round_up8(total);
	if (padded > len)
		padded = len;

	if ((uint64_t)s->l1_size * 8 > QCOW_MAX_L1_BYTES)
		return uq_seterr(-EFBIG, "snapshot l1_size %u exceeds the "
				 "32 MiB L1 limit", s->l1_size);
	ret = uq_check_table("snapshot l1_table_offset", "snapshot l1 table",
			  s->l1_table_offset, (uint64_t)s->l1_size * 8,
			  g->cluster_size, file_size);
	if (ret < 0)
		return ret;

	if (s->extra_size >= 8)
		s->vm_state_size = uq_be64(extra);
	if (s->extra_size >= 16) {
		s->has_disk_size = true;
		s->disk_size = uq_be64(extra + 8);
	}
	if (s->extra_size >= 24) {
		s->has_icount = true;
		s->icount = uq_be64(extra + 16);
	}
	s->id = extra + s->extra_size;
	s->name = s->id + s->id_len;
	s->entry_len = (size_t)padded;
	return 0;
}

long uq_snapshot_encode(const struct uq_snapshot_raw *s, uint8_t *buf, size_t len)
{
	uint32_t extra = s->has_icount ? 24 : 16;
	uint64_t total = round_up8((uint64_t)SNAP_FIXED + extra + s->id_len + s->name_len);

	if ((uint64_t)s->l1_size * 8 > QCOW_MAX_L1_BYTES)
		return uq_seterr(-EINVAL, "snapshot l1_size %u exceeds the 32 MiB "
				 "L1 limit", s->l1_size);
	if (!buf)
		return (long)total;
	if (total > len)
		return uq_seterr(-ENOSPC, "snapshot entry needs %" PRIu64 " bytes, "
				 "%zu available", total, len);
	memset(buf, 0, (size_t)total);
	uq_put_be64(buf, s->l1_table_offset);
	uq_put_be32(buf + 8, s->l1_size);
	uq_put_be16(buf + 12, s->id_len);
	uq_put_be16(buf + 14, s->name_len);
	uq_put_be32(buf + 16, s->date_sec);
	uq_put_be32(buf + 20, s->date_nsec);
	uq_put_be64(buf + 24, s->vm_clock_nsec);
	/* the 32-bit field is ignored when the 64-bit one is present; qemu
	 * stores the low half there, so readers of either agree below 4 GiB */
	uq_put_be32(buf + 32, (uint32_t)s->vm_state_size);
	uq_put_be32(buf + 36, extra);
	uq_put_be64(buf + SNAP_FIXED, s->vm_state_size);
	uq_put_be64(buf + SNAP_FIXED + 8, s->disk_size);
	if (s->has_icount)
		uq_put_be64(buf + SNAP_FIXED + 16, s->icount);
	if (s->id_len)
		memcpy(buf + SNAP_FIXED + extra, s->id, s->id_len);
	if (s->name_len)
		memcpy(buf + SNAP_FIXED + extra + s->id_len, s->name, s->name_len);
	return (long)total;
}
