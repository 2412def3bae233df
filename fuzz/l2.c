// SPDX-License-Identifier: MIT
/* Fuzz target: L1 and L2 entry decoding. Two bytes pick the geometry
 * (cluster size, extended L2, v2/v3, external data file); the rest is an
 * L2 table whose every entry is decoded and checked. */
#include <stdbool.h>
#include <string.h>

#include "format.h"
#include "fuzz.h"

#define F_EXTL2    0x01
#define F_V3       0x02
#define F_DATAFILE 0x04

static void check_l1(const struct uq_geom *g, uint64_t entry)
{
	uint64_t l2_off;
	bool copied;

	if (uq_l1_decode(g, entry, &l2_off, &copied) < 0)
		return;
	FUZZ_CHECK((l2_off & (g->cluster_size - 1)) == 0);
	FUZZ_CHECK(l2_off < QCOW_MAX_HOST_OFFSET);
	FUZZ_CHECK(l2_off == (entry & QCOW_L1E_OFFSET_MASK));
	FUZZ_CHECK(copied == !!(entry & QCOW_OFLAG_COPIED));
	FUZZ_CHECK(!(entry & QCOW_L1E_RESERVED));
}

static void check_l2(const struct uq_geom *g, uint64_t entry, uint64_t bitmap)
{
	struct uq_l2map m;
	bool host_ok;

	memset(&m, 0xa5, sizeof(m));   /* decode must set every field */
	if (uq_l2_decode(g, entry, bitmap, &m) < 0)
		return;
	host_ok = (m.host_off & (g->cluster_size - 1)) == 0 &&
		  m.host_off < QCOW_MAX_HOST_OFFSET;

	switch (m.type) {
	case UQ_C_UNALLOC:
		FUZZ_CHECK(!g->extended_l2);
		FUZZ_CHECK(m.host_off == 0);
		FUZZ_CHECK(!(entry & QCOW_OFLAG_ZERO));
		break;
	case UQ_C_ZERO:
		FUZZ_CHECK(!g->extended_l2 && g->v3);
		FUZZ_CHECK(entry & QCOW_OFLAG_ZERO);
		FUZZ_CHECK(host_ok);
		break;
	case UQ_C_NORMAL:
		FUZZ_CHECK(!g->extended_l2);
		FUZZ_CHECK(host_ok);
		FUZZ_CHECK(m.host_off != 0 || (g->external_data && m.copied));
		/* nothing but offset and COPIED: re-encoding gives the entry */
		FUZZ_CHECK(uq_l2_encode_normal(m.host_off, m.copied) == entry);
		break;
	case UQ_C_COMPRESSED:
		FUZZ_CHECK(entry & QCOW_OFLAG_COMPRESSED);
		FUZZ_CHECK(!(entry & QCOW_OFLAG_COPIED) && !g->external_data);
		FUZZ_CHECK(m.comp_off < QCOW_MAX_HOST_OFFSET);
		/* 1 .. 2^(cluster_bits - 8) sectors, less the start offset */
		FUZZ_CHECK(m.comp_len >= 1 && m.comp_len <= 2 * g->cluster_size);
		FUZZ_CHECK(((m.comp_off & 511) + m.comp_len) % 512 == 0);
		FUZZ_CHECK(m.comp_off + m.comp_len > m.comp_off);
		FUZZ_CHECK(uq_l2_encode_compressed(g, m.comp_off, m.comp_len) ==
			   entry);
		break;
	case UQ_C_SUBCLUSTERS:
		FUZZ_CHECK(g->extended_l2);
		FUZZ_CHECK(host_ok);
		FUZZ_CHECK((m.alloc_mask & m.zero_mask) == 0);
		FUZZ_CHECK(m.alloc_mask == (uint32_t)bitmap);
		FUZZ_CHECK(m.zero_mask == (uint32_t)(bitmap >> 32));
		FUZZ_CHECK(!m.alloc_mask || m.host_off != 0 ||
			   (g->external_data && m.copied));
		break;
	default:
		FUZZ_CHECK(!"uq_l2_decode returned an unknown type");
	}
	if (m.type != UQ_C_SUBCLUSTERS)
		FUZZ_CHECK(m.alloc_mask == 0 && m.zero_mask == 0);
	if (m.type != UQ_C_COMPRESSED)
		FUZZ_CHECK(m.comp_off == 0 && m.comp_len == 0);
	else
		FUZZ_CHECK(m.host_off == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct uq_geom g;
	uint64_t n;

	if (size < 2)
		return 0;
	fuzz_geometry(data[0], data[1] & F_V3, data[1] & F_EXTL2, data[1] & F_DATAFILE, &g);
	data += 2;
	size -= 2;

	n = size / g.l2_entry_bytes;
	if (n > g.l2_entries)
		n = g.l2_entries;
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *p = data + i * g.l2_entry_bytes;
		uint64_t entry = uq_be64(p);

		check_l2(&g, entry, g.extended_l2 ? uq_be64(p + 8) : 0);
		check_l1(&g, entry);
	}
	return 0;
}
