// SPDX-License-Identifier: MIT
/* Fuzz target: a whole image opened from memory and read the way a client
 * would: info, block status, then a bounded sample of reads the input
 * chooses (sync, then all in flight at once), each compared byte for byte
 * with the simple reference reader (refread.c). One input in DEEP_EVERY
 * (chosen by the input too) also reads the same sample through a
 * two-table L2 cache, through a second queue, and as the first snapshots
 * saw it. Mutator in image_mutator.c.
 *
 * Work per input is bounded by the input, not by the virtual size: the
 * sample has at most MAX_READS reads and MAX_BYTES bytes wherever the disk
 * ends. The last four bytes of the input seed the sample (see pick()). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "refread.h"
#include "uqcow.h"

#define MAX_EXTENTS 256            /* block-status calls per pass */
#define DEEP_EXTENTS 4096          /* ... in a deep pass */
#define MAX_READS 24               /* sampled reads per pass */
#define MAX_BYTES (1u << 20)       /* bytes the sample reads per pass */
#define MAX_LEN (256u << 10)       /* one read */
#define DEEP_EVERY 16              /* one input in 16 runs the deep checks */
#define TINY_CACHE 1               /* rounds up to the two-table minimum */
#define MAX_VIEWS 2                /* snapshots read back per deep input */
#define MAX_SNAP_INFO 64           /* snapshot entries checked per open */

struct extent {
	uint64_t start, length;
	bool zero, data, compressed;
};

/* The reads one pass makes, and what they returned. */
struct sample {
	unsigned n;
	uint64_t off[MAX_READS];
	size_t len[MAX_READS];
	int64_t ret[MAX_READS];
	uint64_t hash[MAX_READS];
	bool must_zero[MAX_READS];
};

static struct extent ext[DEEP_EXTENTS];
static unsigned next;

/* ---- the reference reader's verdicts against the engine's ---- */

/* Images the engine refuses and the reference reader opens, on purpose:
 * the engine also validates structures a reader of guest data never
 * needs. Matched against the engine's message; fuzz/README.md lists
 * them with the reasons. */
static const char *const engine_stricter[] = {
	"refcount",            /* refcount table and blocks, refcount_order */
	"snapshot",            /* the snapshot table */
	"extension",           /* header extensions and their lengths */
	"crypto header",       /* the crypto header extension's fields */
	"backing",             /* the backing file name and format */
	"bitmap",
	"data file",           /* its name extension (refread opens no files) */
	"feature",             /* feature name table, compatible bits */
	"nb_snapshots",
	"header_length",
	"l1_table_offset",     /* L1 overlapping other metadata */
	"overlaps",
};

static bool intended(const char *msg)
{
	for (size_t i = 0; i < sizeof(engine_stricter) / sizeof(*engine_stricter); i++)
		if (strstr(msg, engine_stricter[i]))
			return true;
	return false;
}

static void diff_fail(const char *what, const char *engine, const char *ref)
{
	fprintf(stderr, "image_read: engine and reference reader disagree: %s\n"
		"  engine: %s\n  reference: %s\n", what, engine, ref);
	abort();
}

/* The engine refused the image (ret); the reference reader said rref. */
static void diff_refused(int ret, int rref)
{
	if (rref < 0 || ret == -ENOMEM || intended(uq_errmsg()))
		return;
	diff_fail("the engine refuses an image the reference reader opens",
		  uq_errmsg(), "opened");
}

/* The engine opened the image; both must agree on what it is. */
static void diff_opened(const struct uq_info *info, const struct refread *ref,
			int rref)
{
	if (rref == -ENOMEM)
		return;
	if (rref < 0)
		diff_fail("the engine opens an image the reference reader refuses",
			  "opened", refread_why());
	FUZZ_CHECK(refread_size(ref) == info->virtual_size);
}

/* One read: both fail, or both read the same bytes. */
static void diff_read(struct refread *ref, uint64_t off, size_t len, int eret,
		      const uint8_t *ebuf, uint8_t *rbuf)
{
	char what[96];
	int rret = refread_read(ref, rbuf, len, off);

	snprintf(what, sizeof(what), "read of %zu bytes at 0x%llx", len,
		 (unsigned long long)off);
	if (eret == -ENOMEM || rret == -ENOMEM)
		return;
	if (eret < 0 && rret == 0)
		diff_fail(what, uq_errmsg(), "read it");
	if (eret == 0 && rret < 0)
		diff_fail(what, "read it", refread_why());
	if (eret == 0 && memcmp(ebuf, rbuf, len)) {
		size_t i = 0;

		while (ebuf[i] == rbuf[i])
			i++;
		fprintf(stderr, "image_read: first difference at guest byte 0x%llx: "
			"engine 0x%02x, reference 0x%02x\n",
			(unsigned long long)(off + i), ebuf[i], rbuf[i]);
		diff_fail(what, "bytes", "other bytes");
	}
}

static uint64_t hash_buf(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull, w;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0x100000001b3ull;
		h ^= h >> 29;
	}
	for (; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void check_string(const char *s, size_t cap)
{
	FUZZ_CHECK(memchr(s, '\0', cap) != NULL);
}

static void check_info(uq_image *img, struct uq_info *info)
{
	struct uq_snapshot_info si;

	info->struct_size = sizeof(*info);
	FUZZ_CHECK(uq_get_info(img, info) == 0);
	FUZZ_CHECK(info->format == UQ_FMT_QCOW2);
	FUZZ_CHECK(info->version == 2 || info->version == 3);
	FUZZ_CHECK(info->cluster_size >= 512 && info->cluster_size <= (2u << 20));
	FUZZ_CHECK((info->cluster_size & (info->cluster_size - 1)) == 0);
	FUZZ_CHECK(info->refcount_bits >= 1 && info->refcount_bits <= 64 &&
		   (info->refcount_bits & (info->refcount_bits - 1)) == 0);
	FUZZ_CHECK(info->compression_type == 0 || info->compression_type == 1);
	check_string(info->filename, sizeof(info->filename));
	check_string(info->backing_file, sizeof(info->backing_file));
	check_string(info->backing_full, sizeof(info->backing_full));
	check_string(info->backing_format, sizeof(info->backing_format));
	check_string(info->data_file, sizeof(info->data_file));
	FUZZ_CHECK(info->backend != NULL);

	/* the first entries and the last: the table loaded whole at open */
	for (uint32_t i = 0; i < info->nb_snapshots; i++) {
		if (i == MAX_SNAP_INFO)
			i = info->nb_snapshots - 1;
		si.struct_size = sizeof(si);
		FUZZ_CHECK(uq_snapshot_get(img, i, &si) == 0);
		check_string(si.id, sizeof(si.id));
		check_string(si.name, sizeof(si.name));
	}
	si.struct_size = sizeof(si);
	FUZZ_CHECK(uq_snapshot_get(img, info->nb_snapshots, &si) == -ENOENT);
	si.struct_size = sizeof(si);
	FUZZ_CHECK(uq_snapshot_get(img, UINT32_MAX, &si) == -ENOENT);
}

/* Block status from the start of the disk; extents must tile it. */
static void walk_status(uq_image *img, uint64_t vsize, unsigned max)
{
	struct uq_extent e;
	uint64_t off = 0;

	next = 0;
	while (off < vsize && next < max) {
		memset(&e, 0, sizeof(e));
		e.struct_size = sizeof(e);
		if (uq_block_status(img, off, vsize - off, &e) < 0)
			break;
		FUZZ_CHECK(e.start == off);
		FUZZ_CHECK(e.length > 0 && e.length <= vsize - off);
		FUZZ_CHECK(!e.data || e.present);
		ext[next++] = (struct extent){ off, e.length, e.zero && e.depth == 0,
					       e.data, e.compressed };
		off += e.length;
	}
}

/* Choose the sample: the disk's first cluster, then reads inside extents
 * the walk found (data and compressed ones first), cluster aligned or
 * not, across cluster edges, and the last bytes of the disk. */
static void pick(struct sample *s, uint64_t seed, uint64_t vsize, uint64_t cs)
{
	uint64_t budget = MAX_BYTES;

	s->n = 0;
	if (!vsize)
		return;
	while (s->n < MAX_READS && budget) {
		uint64_t r = rnd(&seed), off, len, room;
		const struct extent *e = NULL;

		if (s->n == 0) {
			off = 0;
			len = cs;
		} else if (s->n == 1) {
			off = vsize - (vsize < cs ? vsize : cs) / 2 - 1;
			len = cs;
		} else {
			if (next) {
				e = &ext[r % next];
				/* prefer extents holding data */
				for (unsigned k = 0; k < 4 && !e->data; k++)
					e = &ext[rnd(&seed) % next];
			}
			off = e ? e->start + rnd(&seed) % e->length : rnd(&seed) % vsize;
			switch ((r >> 32) % 4) {
			case 0:   /* the whole cluster */
				off &= ~(cs - 1);
				len = cs;
				break;
			case 1:   /* across the next cluster edge */
				len = cs + 1 + rnd(&seed) % cs;
				break;
			case 2:   /* a few bytes */
				len = 1 + rnd(&seed) % 1024;
				break;
			default:  /* a run of clusters */
				off &= ~(cs - 1);
				len = cs * (2 + rnd(&seed) % 3);
				break;
			}
		}
		room = vsize - off;
		if (len > room)
			len = room;
		if (len > MAX_LEN)
			len = MAX_LEN;
		if (len > budget)
			len = budget;
		s->off[s->n] = off;
		s->len[s->n] = (size_t)len;
		s->must_zero[s->n] = e && e->zero && off >= e->start &&
				     off + len <= e->start + e->length;
		s->n++;
		budget -= len;
	}
}

/* The sample through uq_pread, each read checked against the reference
 * reader (ref may be NULL: the reader refused, as documented). */
static void sync_reads(uq_image *img, struct refread *ref, struct sample *s,
		       uint8_t *buf, uint8_t *rbuf)
{
	for (unsigned i = 0; i < s->n; i++) {
		size_t len = s->len[i];
		ssize_t r = uq_pread(img, buf, len, s->off[i]);

		FUZZ_CHECK(r < 0 || (size_t)r == len);
		s->ret[i] = r < 0 ? r : 0;
		s->hash[i] = r < 0 ? 0 : hash_buf(buf, len);
		if (r >= 0 && s->must_zero[i])
			FUZZ_CHECK(all_zero(buf, len));
		if (ref)
			diff_read(ref, s->off[i], len, r < 0 ? (int)r : 0, buf, rbuf);
	}
}

struct aio_slot {
	ssize_t res;
	bool done;
	uint8_t *buf;
};

static void aio_done(void *arg, ssize_t res)
{
	struct aio_slot *s = arg;

	FUZZ_CHECK(!s->done);
	s->res = res;
	s->done = true;
}

/* The sample again, all in flight together: requests that share an L2
 * table park on one fill. Results must match the sync reads. With q,
 * through a second queue (the L2 cache is then shared across queues). */
static void async_reads(uq_image *img, uq_queue *q, const struct sample *s,
			uint8_t *arena)
{
	struct aio_slot slots[MAX_READS];
	unsigned queued = 0, finished = 0;
	size_t at = 0;

	memset(slots, 0, sizeof(slots));
	for (unsigned i = 0; i < s->n; i++) {
		struct aio_slot *sl = &slots[i];
		int ret;

		sl->buf = arena + at;
		at += s->len[i];
		ret = q ? uq_queue_read(q, sl->buf, s->len[i], s->off[i], aio_done, sl)
			: uq_aio_read(img, sl->buf, s->len[i], s->off[i], aio_done, sl);
		if (ret < 0) {
			sl->res = ret;
			sl->done = true;
		} else {
			queued++;
		}
	}
	for (unsigned guard = 0; finished < queued && guard < 1000; guard++) {
		int r = q ? uq_queue_poll(q, queued - finished)
			  : uq_poll(img, queued - finished);

		FUZZ_CHECK(r >= 0);
		finished += (unsigned)r;
	}
	FUZZ_CHECK(finished == queued);
	for (unsigned i = 0; i < s->n; i++) {
		FUZZ_CHECK(slots[i].done);
		if (slots[i].res >= 0 && s->ret[i] >= 0) {
			FUZZ_CHECK((size_t)slots[i].res == s->len[i]);
			FUZZ_CHECK(hash_buf(slots[i].buf, s->len[i]) == s->hash[i]);
		}
	}
}

/* Reads at and past the end, and empty ones. */
static void edge_reads(uq_image *img, uint64_t vsize, uint8_t *buf)
{
	ssize_t r;

	if (vsize) {
		r = uq_pread(img, buf, 1, vsize - 1);
		FUZZ_CHECK(r < 0 || r == 1);
	}
	r = uq_pread(img, buf, 0, 0);
	FUZZ_CHECK(r <= 0);
	r = uq_pread(img, buf, 1, vsize);    /* past the end: refused or empty */
	FUZZ_CHECK(r <= 1);
}

static int open_mem(const uint8_t *data, size_t size, uint64_t cache,
		    uq_image **img)
{
	struct uq_open_opts o;

	memset(&o, 0, sizeof(o));
	o.struct_size = sizeof(o);
	o.backend = UQ_IO_MEM;
	o.format = UQ_FMT_QCOW2;
	o.l2_cache_size = cache;
	o.mem_data = data;
	o.mem_len = size;
	return uq_open("fuzz.qcow2", &o, img);
}

static uint8_t bufs[3][MAX_BYTES];   /* engine, reference, async arena */

/* Open with a two-table cache: the same sample reads the same bytes. */
static void tiny_cache(const uint8_t *data, size_t size, const struct sample *s)
{
	struct sample t = *s;
	uq_image *img;

	int ret = open_mem(data, size, TINY_CACHE, &img);

	/* the cache size changes nothing but speed */
	FUZZ_CHECK(ret == 0 || ret == -ENOMEM);
	if (ret < 0)
		return;
	sync_reads(img, NULL, &t, bufs[0], bufs[1]);
	for (unsigned i = 0; i < s->n; i++) {
		FUZZ_CHECK(t.ret[i] == s->ret[i]);
		FUZZ_CHECK(t.hash[i] == s->hash[i]);
	}
	uq_close(img);
}

/* Read the disk as each of the first snapshots saw it (qemu-img convert
 * -l): the snapshot's own L1 table and size, from a fresh open, against
 * the reference reader's view of the same snapshot. */
static void view_snapshots(const uint8_t *data, size_t size, uint32_t nb,
			   uint64_t seed)
{
	struct uq_snapshot_info si;
	struct uq_info info;
	struct sample s;
	uq_image *img;

	for (uint32_t i = 0; i < nb && i < MAX_VIEWS; i++) {
		struct refread *ref = NULL;

		if (open_mem(data, size, 0, &img) < 0)
			return;
		si.struct_size = sizeof(si);
		if (uq_snapshot_get(img, i, &si) == 0 &&
		    uq_snapshot_view(img, si.id) == 0) {
			check_info(img, &info);
			walk_status(img, info.virtual_size, MAX_EXTENTS);
			pick(&s, seed + i, info.virtual_size, info.cluster_size);
			int rref = refread_open(data, size, si.id, &ref);

			/* an ID holding a NUL byte reaches neither reader whole
			 * through a C string: no common name, no comparison */
			if (rref != -ENOENT)
				diff_opened(&info, ref, rref);
			sync_reads(img, ref, &s, bufs[0], bufs[1]);
			edge_reads(img, info.virtual_size, bufs[0]);
			refread_close(ref);
		}
		uq_close(img);
	}
}

/* The sample's seed and the deep choice: the input's last four bytes. */
static uint64_t input_seed(const uint8_t *data, size_t size)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ size;

	for (size_t i = size > 4 ? size - 4 : 0; i < size; i++)
		seed = (seed << 8 | seed >> 56) ^ data[i];
	return seed ? seed : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t seed = input_seed(data, size);
	bool deep = seed % DEEP_EVERY == 0;
	struct refread *ref = NULL;
	struct uq_info info;
	struct sample s;
	uq_image *img;
	uq_queue *q;
	int ret, rref;

	ret = open_mem(data, size, 0, &img);
	rref = refread_open(data, size, NULL, &ref);
	if (ret < 0) {
		/* every refusal says why */
		FUZZ_CHECK(ret == -ENOMEM || uq_errmsg()[0] != '\0');
		diff_refused(ret, rref);
		refread_close(ref);
		return 0;
	}
	check_info(img, &info);
	diff_opened(&info, ref, rref);
	walk_status(img, info.virtual_size, deep ? DEEP_EXTENTS : MAX_EXTENTS);
	pick(&s, seed, info.virtual_size, info.cluster_size);
	sync_reads(img, ref, &s, bufs[0], bufs[1]);
	async_reads(img, NULL, &s, bufs[2]);
	edge_reads(img, info.virtual_size, bufs[0]);
	if (deep && uq_queue_create(img, 4, &q) == 0) {
		async_reads(img, q, &s, bufs[2]);
		uq_queue_destroy(q);
	}
	uq_close(img);
	refread_close(ref);
	if (deep) {
		tiny_cache(data, size, &s);
		view_snapshots(data, size, info.nb_snapshots, seed);
	}
	return 0;
}
