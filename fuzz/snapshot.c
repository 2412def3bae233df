// SPDX-License-Identifier: MIT
/* Fuzz target: snapshot table entries. Eight bytes pick the geometry, the
 * entry count and the file size; the rest is a snapshot table, walked
 * entry by entry as the image layer walks it. */
#include <stdbool.h>
#include <string.h>

#include "format.h"
#include "fuzz.h"

#define PREFIX 8
#define F_V3       0x01
#define F_EXTL2    0x02
#define F_DATAFILE 0x04
#define F_MAXSNAP  0x08   /* the entry count is the 65536 limit */

static volatile uint64_t sink;

static void check_entry(const struct uq_geom *g, const uint8_t *tab,
			size_t len, size_t pos, uint64_t file_size,
			const struct uq_snapshot_raw *s)
{
	size_t left = len - pos;
	uint64_t total = 40ull + s->extra_size + s->id_len + s->name_len;
	uint64_t sum = 0;

	FUZZ_CHECK(s->entry_len >= 40 && s->entry_len <= left);
	FUZZ_CHECK(s->entry_len >= total);
	FUZZ_CHECK(s->entry_len % 8 == 0 || s->entry_len == left);
	FUZZ_CHECK(s->extra_size <= QCOW_MAX_SNAPSHOT_EXTRA);
	if (g->v3)
		FUZZ_CHECK(s->extra_size >= 16 && s->has_disk_size);
	FUZZ_CHECK(s->has_disk_size == (s->extra_size >= 16));
	FUZZ_CHECK(s->has_icount == (s->extra_size >= 24));
	if (s->extra_size < 8)
		FUZZ_CHECK(s->vm_state_size <= UINT32_MAX);

	/* id and name lie inside this entry, in order */
	FUZZ_CHECK(s->id == tab + pos + 40 + s->extra_size);
	FUZZ_CHECK(s->name == s->id + s->id_len);
	FUZZ_CHECK(s->name + s->name_len <= tab + pos + s->entry_len);
	for (uint16_t i = 0; i < s->id_len; i++)
		sum += s->id[i];
	for (uint16_t i = 0; i < s->name_len; i++)
		sum += s->name[i];
	sink = sum;

	/* the snapshot's L1 table: aligned, capped, inside the file (an
	 * empty one only aligned: no bytes of it lie past the end) */
	FUZZ_CHECK((uint64_t)s->l1_size * 8 <= QCOW_MAX_L1_BYTES);
	FUZZ_CHECK((s->l1_table_offset & (g->cluster_size - 1)) == 0);
	FUZZ_CHECK(!s->l1_size || (s->l1_table_offset <= file_size &&
		   (uint64_t)s->l1_size * 8 <= file_size - s->l1_table_offset));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct uq_geom g;
	struct uq_snapshot_raw s;
	uint64_t file_size;
	uint32_t nb, fsz;
	size_t pos = 0;

	if (size < PREFIX)
		return 0;
	fuzz_geometry(data[0], data[1] & F_V3, data[1] & F_EXTL2, data[1] & F_DATAFILE, &g);
	nb = data[1] & F_MAXSNAP ? QCOW_MAX_SNAPSHOTS : uq_be16(data + 2);
	fsz = uq_be32(data + 4);
	file_size = fsz ? (uint64_t)fsz << 9 : UINT64_MAX;
	data += PREFIX;
	size -= PREFIX;

	/* Each accepted entry consumes >= 40 bytes: at most size / 40 steps. */
	for (uint32_t i = 0; i < nb; i++) {
		if (uq_snapshot_decode(&g, data + pos, size - pos, file_size,
				       &s) < 0)
			break;
		check_entry(&g, data, size, pos, file_size, &s);
		pos += s.entry_len;
	}
	return 0;
}
