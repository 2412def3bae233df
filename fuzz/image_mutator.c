// SPDX-License-Identifier: MIT
/* Structure-aware mutator for image_read and image_ops: decodes the header and aims at
 * one field (header, L1/L2/refcount table entry, snapshot, extension) with
 * a boundary value, or lets libFuzzer mutate one metadata region. */
#include <stdbool.h>
#include <string.h>

#include "format.h"
#include "fuzz.h"

/* libFuzzer's byte mutator. Weak: AFL++ and honggfuzz drivers may not
 * provide it, and the standalone replay main gives a small fallback. */
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size)
	__attribute__((weak));

struct mut {
	uint8_t *data;
	size_t size, max;
	struct uq_header h;
	struct uq_geom g;
	uint64_t cs;
	uint64_t rng;
};

static uint64_t rnd(struct mut *m)
{
	/* xorshift64*: cheap, and the seed libFuzzer gives fixes the run */
	m->rng ^= m->rng >> 12;
	m->rng ^= m->rng << 25;
	m->rng ^= m->rng >> 27;
	return m->rng * 0x2545f4914f6cdd1dull;
}

static uint64_t below(struct mut *m, uint64_t n)
{
	return n ? rnd(m) % n : 0;
}

static size_t mutate_bytes(struct mut *m, uint8_t *p, size_t size, size_t max)
{
	if (!max)
		return size;
	if (LLVMFuzzerMutate)
		return LLVMFuzzerMutate(p, size, max);
	/* no engine mutator: overwrite a few bytes */
	if (!size)
		return 0;
	for (unsigned i = 1 + (unsigned)below(m, 4); i; i--)
		p[below(m, size)] = (uint8_t)rnd(m);
	return size;
}

/* A value from the edges integer and offset checks live on. */
static uint64_t boundary(struct mut *m)
{
	uint64_t k = below(m, 64);

	switch (below(m, 16)) {
	case 0: return 0;
	case 1: return 1;
	case 2: return 1ull << k;
	case 3: return (1ull << k) - 1;
	case 4: return (1ull << k) + 1;
	case 5: return UINT32_MAX - below(m, 2);
	case 6: return (uint64_t)UINT32_MAX + 1 + below(m, 2);
	case 7: return UINT64_MAX - below(m, 2);
	case 8: return (uint64_t)INT64_MAX + below(m, 2);
	case 9: return QCOW_MAX_HOST_OFFSET - below(m, 2) * m->cs;
	case 10: return m->size;
	case 11: return m->size & ~(m->cs - 1);                 /* last cluster */
	case 12: return (m->size + m->cs - 1) & ~(m->cs - 1);   /* just past it */
	case 13: return below(m, m->size / m->cs + 2) * m->cs;  /* some cluster */
	case 14: return m->cs + below(m, 3) - 1;
	default: return (1ull << 63) - m->cs;
	}
}

/* An offset that usually points at a cluster of this file. */
static uint64_t cluster_off(struct mut *m)
{
	if (below(m, 4) == 0)
		return boundary(m);
	return below(m, m->size / m->cs + 1) * m->cs;
}

static void put(uint8_t *p, unsigned width, uint64_t v)
{
	if (width == 8)
		uq_put_be64(p, v);
	else if (width == 4)
		uq_put_be32(p, (uint32_t)v);
	else if (width == 2)
		uq_put_be16(p, (uint16_t)v);
	else
		*p = (uint8_t)v;
}

static uint64_t get(const uint8_t *p, unsigned width)
{
	return width == 8 ? uq_be64(p) : width == 4 ? uq_be32(p) :
	       width == 2 ? uq_be16(p) : *p;
}

/* Set (or bit-flip) the width-byte field at off, if it lies in the file. */
static bool set_field(struct mut *m, uint64_t off, unsigned width, uint64_t v)
{
	if (off > m->size || m->size - off < width)
		return false;
	put(m->data + off, width, v);
	return true;
}

static bool flip_bit(struct mut *m, uint64_t off, unsigned width)
{
	if (off > m->size || m->size - off < width)
		return false;
	put(m->data + off, width,
	    get(m->data + off, width) ^ (1ull << below(m, width * 8)));
	return true;
}

/* ---- header ---- */

static const struct { uint8_t off, width; } hfields[] = {
	{ 4, 4 }, { 8, 8 }, { 16, 4 }, { 20, 4 }, { 24, 8 }, { 32, 4 },
	{ 36, 4 }, { 40, 8 }, { 48, 8 }, { 56, 4 }, { 60, 4 }, { 64, 8 },
	{ 72, 8 }, { 80, 8 }, { 88, 8 }, { 96, 4 }, { 100, 4 }, { 104, 1 },
};

static bool mutate_header_field(struct mut *m)
{
	unsigned i = (unsigned)below(m, sizeof(hfields) / sizeof(hfields[0]));
	unsigned off = hfields[i].off, w = hfields[i].width;
	uint64_t v;

	switch (off) {
	case 20:                                      /* cluster_bits */
		v = 7 + below(m, 17);
		break;
	case 96:                                      /* refcount_order */
		v = below(m, 8);
		break;
	case 100:                                     /* header_length */
		v = (uint64_t[]){ 72, 104, 108, 112, 120, 4096 }[below(m, 6)];
		if (below(m, 3) == 0)
			v = m->cs + 8 * below(m, 2);
		break;
	case 72: case 80: case 88:                    /* feature bits */
		return flip_bit(m, off, w);
	case 8: case 40: case 48: case 64:            /* table offsets */
		v = cluster_off(m);
		break;
	default:
		v = boundary(m);
	}
	return set_field(m, off, w, v);
}

/* Re-encode the decoded header as the other version (v2 <-> v3), or with
 * another compression type: whole-header changes no single field makes. */
static bool reencode_header(struct mut *m)
{
	struct uq_header h = m->h;

	if (below(m, 2)) {
		if (h.version == 3) {
			h.version = 2;
			h.incompatible_features = h.compatible_features = 0;
			h.autoclear_features = 0;
			h.refcount_order = 4;
			h.compression_type = 0;
		} else {
			h.version = 3;
			h.header_length = below(m, 2) ? QCOW_V3_HEADER_LEN
						      : QCOW_V3_HEADER_LEN_CT;
		}
	} else if (h.version == 3) {
		h.header_length = QCOW_V3_HEADER_LEN_CT;
		h.compression_type ^= 1;
		h.incompatible_features ^= QCOW_INCOMPAT_COMPRESSION;
	}
	return uq_header_encode(&h, m->data, m->size) == 0;
}

/* ---- tables ---- */

/* Byte offset of entry i of a table, if the whole entry is in the file. */
static bool entry_at(const struct mut *m, uint64_t table, uint64_t i,
		     unsigned esize, uint64_t *off)
{
	if (table > m->size || i > (m->size - table) / esize)
		return false;
	*off = table + i * esize;
	return m->size - *off >= esize;
}

/* An L2 table the L1 table points at, inside the file. */
static bool pick_l2(struct mut *m, uint64_t *l2_off)
{
	uint64_t n = m->h.l1_size, off;

	for (int tries = 0; tries < 8 && n; tries++) {
		uint64_t i = below(m, n < 64 ? n : 64);   /* populated ones first */

		if (!entry_at(m, m->h.l1_table_offset, i, 8, &off))
			continue;
		*l2_off = uq_be64(m->data + off) & QCOW_L1E_OFFSET_MASK;
		if (*l2_off && *l2_off < m->size)
			return true;
	}
	return false;
}

static bool mutate_l1(struct mut *m)
{
	uint64_t off, v;

	if (!m->h.l1_size ||
	    !entry_at(m, m->h.l1_table_offset, below(m, m->h.l1_size), 8, &off))
		return false;
	switch (below(m, 4)) {
	case 0:
		v = cluster_off(m) | (below(m, 2) ? QCOW_OFLAG_COPIED : 0);
		break;
	case 1:   /* point at other metadata: header, L1, refcount table */
		v = (uint64_t[]){ 0, m->h.l1_table_offset,
				  m->h.refcount_table_offset,
				  m->h.snapshots_offset }[below(m, 4)];
		v |= QCOW_OFLAG_COPIED;
		break;
	case 2:
		return flip_bit(m, off, 8);
	default:
		v = boundary(m);
	}
	return set_field(m, off, 8, v);
}

static bool mutate_l2(struct mut *m)
{
	unsigned eb = m->g.l2_entry_bytes;
	uint64_t l2, off, v;

	if (!pick_l2(m, &l2) ||
	    !entry_at(m, l2, below(m, m->g.l2_entries < 256 ? m->g.l2_entries : 256),
		      eb, &off))
		return false;
	if (m->g.extended_l2 && below(m, 3) == 0) {   /* the subcluster bitmap */
		uint32_t a = (uint32_t)rnd(m), z = (uint32_t)rnd(m);

		switch (below(m, 4)) {
		case 0: z &= ~a; break;                /* valid: disjoint */
		case 1: a = UINT32_MAX; z = 0; break;
		case 2: a = 0; z = UINT32_MAX; break;
		default: break;                         /* overlapping */
		}
		return set_field(m, off + 8, 8, (uint64_t)z << 32 | a);
	}
	switch (below(m, 6)) {
	case 0:
		v = cluster_off(m) | (below(m, 2) ? QCOW_OFLAG_COPIED : 0);
		break;
	case 1:
		v = QCOW_OFLAG_ZERO | (below(m, 2) ? cluster_off(m) : 0);
		break;
	case 2: {  /* compressed: anywhere in the file, any length */
		uint64_t at = below(m, m->size + 1);

		v = uq_l2_encode_compressed(&m->g, at, 1 + below(m, 2 * m->cs));
		break;
	}
	case 3:
		v = l2 | QCOW_OFLAG_COPIED;    /* data over its own L2 table */
		break;
	case 4:
		return flip_bit(m, off, 8);
	default:
		v = boundary(m);
	}
	return set_field(m, off, 8, v);
}

static bool mutate_reftable(struct mut *m)
{
	uint64_t n = (uint64_t)m->h.refcount_table_clusters * m->cs / 8, off, v;

	if (!entry_at(m, m->h.refcount_table_offset, below(m, n < 64 ? n : 64),
		      8, &off))
		return false;
	switch (below(m, 3)) {
	case 0:
		v = cluster_off(m);
		break;
	case 1:
		return flip_bit(m, off, 8);
	default:
		v = boundary(m);
	}
	return set_field(m, off, 8, v);
}

/* An entry of a refcount block: 0, 1, the maximum, or past it. */
static bool mutate_refblock(struct mut *m)
{
	uint64_t off, blk, bits = 1ull << m->h.refcount_order;
	uint64_t per = m->cs * 8 / bits, i;
	uint64_t max = uq_refcount_max(m->h.refcount_order);

	if (!entry_at(m, m->h.refcount_table_offset, 0, 8, &off))
		return false;
	blk = uq_be64(m->data + off) & QCOW_REFT_OFFSET_MASK;
	i = below(m, per < 256 ? per : 256);
	if (!blk || blk > m->size || (m->size - blk) * 8 / bits <= i)
		return false;
	uq_refcount_set(m->data + blk, m->h.refcount_order, i,
			(uint64_t[]){ 0, 1, 2, max, max - 1 }[below(m, 5)]);
	return true;
}

/* A field of one snapshot table entry. */
static bool mutate_snapshot(struct mut *m)
{
	static const struct { uint8_t off, width; } sf[] = {
		{ 0, 8 }, { 8, 4 }, { 12, 2 }, { 14, 2 }, { 32, 4 }, { 36, 4 },
		{ 40, 8 }, { 48, 8 },
	};
	uint64_t pos = m->h.snapshots_offset, want;

	if (!m->h.nb_snapshots || !pos)
		return false;
	/* step over raw entries without trusting them */
	want = below(m, m->h.nb_snapshots < 8 ? m->h.nb_snapshots : 8);
	for (uint64_t i = 0; i < want; i++) {
		if (pos > m->size || m->size - pos < 40)
			return false;
		pos += (40ull + uq_be32(m->data + pos + 36) +
			uq_be16(m->data + pos + 12) + uq_be16(m->data + pos + 14) + 7) & ~7ull;
	}
	unsigned f = (unsigned)below(m, sizeof(sf) / sizeof(sf[0]));
	uint64_t v;

	if (sf[f].off == 0)
		v = cluster_off(m);
	else if (sf[f].off == 36)   /* extra_size */
		v = (uint64_t[]){ 0, 8, 15, 16, 24, 1024, 1025 }[below(m, 7)];
	else
		v = boundary(m);
	return set_field(m, pos + sf[f].off, sf[f].width, v);
}

/* The length (or type) of one header extension. */
static bool mutate_extension(struct mut *m)
{
	static const uint32_t types[] = {
		QCOW_EXT_END, QCOW_EXT_BACKING_FMT, QCOW_EXT_FEATURES,
		QCOW_EXT_BITMAPS, QCOW_EXT_CRYPTO, QCOW_EXT_DATA_FILE,
		0x12345678,
	};
	uint64_t limit = m->size < m->cs ? m->size : m->cs;
	uint64_t pos = m->h.version == 2 ? QCOW_V2_HEADER_LEN : m->h.header_length;
	uint64_t found[32];
	unsigned n = 0;

	while (n < 32 && pos + 8 <= limit) {
		uint32_t len = uq_be32(m->data + pos + 4);

		found[n++] = pos;
		if (!uq_be32(m->data + pos))
			break;
		pos = (pos + 8 + len + 7) & ~7ull;
	}
	if (!n)
		return false;
	pos = found[below(m, n)];
	if (below(m, 4) == 0)
		return set_field(m, pos, 4, types[below(m, sizeof(types) / 4)]);
	uint64_t room = limit - pos - 8;
	uint64_t len = uq_be32(m->data + pos + 4);

	return set_field(m, pos + 4, 4, (uint64_t[]){
		0, 1, 7, 8, 16, 24, 48, room, room + 1, len - 1, len + 1,
		len + 8, UINT32_MAX, 0x80000000u, 1023, 1024 }[below(m, 16)]);
}

/* libFuzzer mutates one metadata region in place. */
static bool mutate_region(struct mut *m)
{
	uint64_t start, len, l2;
	bool header = false;

	switch (below(m, 6)) {
	case 0:
		header = true;
		start = 0;
		len = m->h.version == 2 ? QCOW_V2_HEADER_LEN : m->h.header_length;
		break;
	case 1:   /* extensions and backing name: rest of the header cluster */
		start = m->h.version == 2 ? QCOW_V2_HEADER_LEN : m->h.header_length;
		len = m->cs - start;
		break;
	case 2:
		start = m->h.l1_table_offset;
		len = (uint64_t)m->h.l1_size * 8;
		break;
	case 3:
		if (!pick_l2(m, &l2))
			return false;
		start = l2;
		len = m->cs;
		break;
	case 4:
		start = m->h.refcount_table_offset;
		len = m->cs;
		break;
	default:
		start = m->h.snapshots_offset;
		len = m->cs;
	}
	if (start >= m->size || (start == 0 && !header))
		return false;   /* absent table (offset 0) or past the end */
	if (len > m->size - start)
		len = m->size - start;
	if (len > 4096)   /* a window of a big table */
		start += below(m, len / 512 - 7) * 512, len = 4096;
	if (!len)
		return false;
	mutate_bytes(m, m->data + start, (size_t)len, (size_t)len);
	return true;
}

/* Cut or grow the file at a cluster edge (tables past EOF, short L2s). */
static bool resize_file(struct mut *m)
{
	uint64_t n = (m->size + m->cs - 1) / m->cs, size;

	switch (below(m, 3)) {
	case 0:
		size = below(m, n + 2) * m->cs;
		break;
	case 1:
		size = m->size - below(m, m->size < 64 ? m->size : 64);
		break;
	default:
		size = m->size + 1 + below(m, 511);
	}
	if (size > m->max)
		size = m->max;
	if (size > m->size)
		memset(m->data + m->size, 0, (size_t)(size - m->size));
	m->size = (size_t)size;
	return true;
}

/* Also the image half of image_ops' mutator (fuzz/image_ops.c). */
size_t uq_fuzz_mutate_image(uint8_t *data, size_t size, size_t max_size,
			    unsigned int seed);

size_t uq_fuzz_mutate_image(uint8_t *data, size_t size, size_t max_size,
			    unsigned int seed)
{
	struct mut m;
	bool done = false;

	memset(&m, 0, sizeof(m));
	m.data = data;
	m.size = size;
	m.max = max_size;
	m.rng = ((uint64_t)seed << 1 | 1) * 0x9e3779b97f4a7c15ull;

	/* Structure only where the header decodes (tables may be past EOF);
	 * otherwise, and a quarter of the time anyway, plain byte mutation. */
	if (size < QCOW_V2_HEADER_LEN || below(&m, 4) == 0 ||
	    uq_header_decode(data, size, UINT64_MAX, &m.h) < 0)
		return mutate_bytes(&m, data, size, max_size);
	uq_geom_init(&m.h, &m.g);
	m.cs = m.g.cluster_size;

	for (int tries = 0; !done && tries < 4; tries++) {
		switch (below(&m, 12)) {
		case 0: case 1: done = mutate_header_field(&m); break;
		case 2: done = reencode_header(&m); break;
		case 3: done = mutate_l1(&m); break;
		case 4: case 5: done = mutate_l2(&m); break;
		case 6: done = mutate_reftable(&m); break;
		case 7: done = mutate_refblock(&m); break;
		case 8: done = mutate_snapshot(&m); break;
		case 9: done = mutate_extension(&m); break;
		case 10: done = mutate_region(&m); break;
		default: done = resize_file(&m); break;
		}
	}
	if (!done)
		return mutate_bytes(&m, data, size, max_size);
	return m.size;
}

/* image_read's mutator. Weak: image_ops links this file too and defines
 * its own, which keeps the script at the end of the input intact. */
__attribute__((weak))
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
			       unsigned int seed)
{
	/* now and then only the last four bytes, which choose image_read's
	 * sample of reads and its deep checks: same image, other reads */
	if (seed % 8 == 0 && size >= 4) {
		for (int i = 1; i <= 4; i++)
			data[size - i] = (uint8_t)(seed >> (8 * i - 5));
		return size;
	}
	return uq_fuzz_mutate_image(data, size, max_size, seed);
}
