// SPDX-License-Identifier: MIT
/* Fuzz target: a whole image opened from memory and read the way a client
 * would: info, block status, every cluster (sync, async, through a second
 * queue), then as its snapshots saw it. Opened twice, with the default and
 * a two-table L2 cache: both must read the same bytes. Mutator in
 * image_mutator.c. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "uqcow.h"

#define MAX_EXTENTS 4096           /* block-status calls per open */
#define MAX_READS 2048             /* cluster reads in the linear pass */
#define MAX_SPAN (64ull << 20)     /* virtual bytes the linear pass covers */
#define MAX_BYTES (16ull << 20)    /* bytes read per pass */
#define MAX_FAR_READS 256          /* extents past MAX_SPAN read once each */
#define MAX_AIO 32                 /* requests in flight at once */
#define AIO_BYTES (4u << 20)
#define TINY_CACHE 1               /* rounds up to the two-table minimum */
#define MAX_VIEWS 2                /* snapshots read back per input */

struct read_log {
	unsigned n;
	uint64_t off[MAX_READS];
	int64_t ret[MAX_READS];
	uint64_t hash[MAX_READS];
};

static struct read_log logs[2];
static uint64_t far_off[MAX_FAR_READS];

/* The disk's first bytes as the linear pass read them (while every read
 * succeeded), for checking unaligned reads against. */
static uint8_t head[256 << 10];
static size_t head_len;
static uint32_t nb_snapshots;    /* of the image run_once opened */

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
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
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

	for (uint32_t i = 0; i < info->nb_snapshots; i++) {
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

/* Walk block status over the whole disk; extents must tile it. Ranges
 * reported as zeros are read back and must be zeros. */
static unsigned walk_status(uq_image *img, uint64_t vsize, uint8_t *buf,
			    size_t bufsize)
{
	struct uq_extent e;
	uint64_t off = 0;
	unsigned nfar = 0;
	ssize_t r;

	for (unsigned n = 0; off < vsize && n < MAX_EXTENTS; n++) {
		memset(&e, 0, sizeof(e));
		e.struct_size = sizeof(e);
		if (uq_block_status(img, off, vsize - off, &e) < 0)
			break;
		FUZZ_CHECK(e.start == off);
		FUZZ_CHECK(e.length > 0 && e.length <= vsize - off);
		FUZZ_CHECK(!e.data || e.present);
		if (e.zero && e.depth == 0) {
			size_t len = e.length < bufsize ? (size_t)e.length : bufsize;

			r = uq_pread(img, buf, len, off);
			FUZZ_CHECK(r < 0 || (size_t)r == len);
			if (r > 0)
				FUZZ_CHECK(all_zero(buf, len));
		}
		if ((e.data || e.present) && off >= MAX_SPAN &&
		    nfar < MAX_FAR_READS)
			far_off[nfar++] = off;
		off += e.length;
	}
	return nfar;
}

/* Every cluster of the first MAX_SPAN bytes, within the read budgets. */
static void linear_reads(uq_image *img, uint64_t vsize, uint64_t cs,
			 uint8_t *buf, struct read_log *log)
{
	uint64_t span = vsize < MAX_SPAN ? vsize : MAX_SPAN, bytes = 0;

	log->n = 0;
	head_len = 0;
	for (uint64_t off = 0; off < span && log->n < MAX_READS &&
			       bytes < MAX_BYTES; off += cs) {
		size_t len = (size_t)(vsize - off < cs ? vsize - off : cs);
		ssize_t r = uq_pread(img, buf, len, off);

		FUZZ_CHECK(r < 0 || (size_t)r == len);
		log->off[log->n] = off;
		log->ret[log->n] = r;
		log->hash[log->n] = r < 0 ? 0 : hash_buf(buf, len);
		log->n++;
		if (r >= 0 && off == head_len && len <= sizeof(head) - off) {
			memcpy(head + off, buf, len);
			head_len += len;
		}
		bytes += len;
	}
}

struct aio_slot {
	ssize_t res;
	bool done;
	uint8_t *buf;
	size_t len;
};

static void aio_done(void *arg, ssize_t res)
{
	struct aio_slot *s = arg;

	FUZZ_CHECK(!s->done);
	s->res = res;
	s->done = true;
}

/* The first clusters again, all in flight together: requests that share
 * an L2 table park on one fill. Results must match the sync reads. With
 * q, through a second queue (the L2 cache is then shared across queues). */
static void async_reads(uq_image *img, uq_queue *q, uint64_t vsize,
			uint64_t cs, const struct read_log *log)
{
	struct aio_slot slots[MAX_AIO];
	unsigned n = log->n, queued = 0, finished = 0;

	if (n > MAX_AIO)
		n = MAX_AIO;
	if (n > AIO_BYTES / cs)
		n = (unsigned)(AIO_BYTES / cs);
	if (!n)
		return;
	memset(slots, 0, sizeof(slots));
	for (unsigned i = 0; i < n; i++) {
		struct aio_slot *s = &slots[i];
		uint64_t off = log->off[i];
		int ret;

		s->len = (size_t)(vsize - off < cs ? vsize - off : cs);
		s->buf = malloc(s->len);
		FUZZ_CHECK(s->buf);
		ret = q ? uq_queue_read(q, s->buf, s->len, off, aio_done, s)
			: uq_aio_read(img, s->buf, s->len, off, aio_done, s);
		if (ret < 0) {
			s->res = ret;
			s->done = true;
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
	for (unsigned i = 0; i < n; i++) {
		FUZZ_CHECK(slots[i].done);
		if (slots[i].res >= 0 && log->ret[i] >= 0) {
			FUZZ_CHECK((size_t)slots[i].res == slots[i].len);
			FUZZ_CHECK(hash_buf(slots[i].buf, slots[i].len) ==
				   log->hash[i]);
		}
		free(slots[i].buf);
	}
}

/* A part of what the linear pass read must read the same on its own:
 * unaligned, across cluster and subcluster edges. */
static void check_subrange(uq_image *img, uint8_t *buf, uint64_t cs,
			   size_t off, size_t len)
{
	ssize_t r;

	if (len == 0 || len > cs || off > head_len || len > head_len - off)
		return;
	r = uq_pread(img, buf, len, off);
	FUZZ_CHECK(r >= 0 && (size_t)r == len);
	FUZZ_CHECK(memcmp(buf, head + off, len) == 0);
}

/* Reads that straddle clusters, touch the end, or are empty. */
static void edge_reads(uq_image *img, uint64_t vsize, uint64_t cs,
		       uint8_t *buf, unsigned nfar)
{
	ssize_t r;

	check_subrange(img, buf, cs, (size_t)cs / 2, (size_t)cs);
	check_subrange(img, buf, cs, 511, 1026);
	check_subrange(img, buf, cs, (size_t)cs - 1, 2);
	check_subrange(img, buf, cs, (size_t)(cs / 32) * 3 + 7, (size_t)cs / 8);
	if (head_len)
		check_subrange(img, buf, cs, head_len - 1, 1);

	for (unsigned i = 0; i < nfar; i++) {
		size_t len = (size_t)(vsize - far_off[i] < cs ? vsize - far_off[i] : cs);

		r = uq_pread(img, buf, len, far_off[i]);
		FUZZ_CHECK(r < 0 || (size_t)r == len);
	}
	if (vsize >= cs + 7) {
		r = uq_pread(img, buf, 14, cs - 7);
		FUZZ_CHECK(r < 0 || r == 14);
	}
	if (vsize >= 2 * cs + 512) {
		r = uq_pread(img, buf, (size_t)cs, cs / 2 + 512);
		FUZZ_CHECK(r < 0 || (uint64_t)r == cs);
	}
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

/* Returns false if the image did not open. */
static bool run_once(const uint8_t *data, size_t size, uint64_t cache,
		     struct read_log *log)
{
	struct uq_info info;
	uq_image *img;
	uq_queue *q;
	uint8_t *buf;
	unsigned nfar;
	int ret;

	ret = open_mem(data, size, cache, &img);
	if (ret < 0) {
		/* every refusal says why */
		FUZZ_CHECK(ret == -ENOMEM || uq_errmsg()[0] != '\0');
		return false;
	}
	check_info(img, &info);
	nb_snapshots = info.nb_snapshots;
	buf = malloc(info.cluster_size);
	FUZZ_CHECK(buf);
	nfar = walk_status(img, info.virtual_size, buf, info.cluster_size);
	linear_reads(img, info.virtual_size, info.cluster_size, buf, log);
	async_reads(img, NULL, info.virtual_size, info.cluster_size, log);
	edge_reads(img, info.virtual_size, info.cluster_size, buf, nfar);
	if (uq_queue_create(img, 4, &q) == 0) {
		async_reads(img, q, info.virtual_size, info.cluster_size, log);
		uq_queue_destroy(q);
	}
	free(buf);
	uq_close(img);
	return true;
}

/* Read the disk as each of the first snapshots saw it (qemu-img convert
 * -l): the snapshot's own L1 table and size, from a fresh open. */
static void view_snapshots(const uint8_t *data, size_t size, uint32_t nb)
{
	static struct read_log slog;
	struct uq_snapshot_info si;
	struct uq_info info;
	uq_image *img;
	uint8_t *buf;

	for (uint32_t i = 0; i < nb && i < MAX_VIEWS; i++) {
		if (open_mem(data, size, 0, &img) < 0)
			return;
		si.struct_size = sizeof(si);
		if (uq_snapshot_get(img, i, &si) == 0 &&
		    uq_snapshot_view(img, si.id) == 0) {
			check_info(img, &info);
			buf = malloc(info.cluster_size);
			FUZZ_CHECK(buf);
			walk_status(img, info.virtual_size, buf, info.cluster_size);
			linear_reads(img, info.virtual_size, info.cluster_size, buf,
				     &slog);
			edge_reads(img, info.virtual_size, info.cluster_size, buf, 0);
			free(buf);
		}
		uq_close(img);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool a, b;

	a = run_once(data, size, 0, &logs[0]);
	b = run_once(data, size, TINY_CACHE, &logs[1]);
	/* The cache size changes nothing but speed. */
	FUZZ_CHECK(a == b);
	if (!a)
		return 0;
	FUZZ_CHECK(logs[0].n == logs[1].n);
	for (unsigned i = 0; i < logs[0].n; i++) {
		FUZZ_CHECK(logs[0].off[i] == logs[1].off[i]);
		FUZZ_CHECK(logs[0].ret[i] == logs[1].ret[i]);
		FUZZ_CHECK(logs[0].hash[i] == logs[1].hash[i]);
	}
	view_snapshots(data, size, nb_snapshots);
	return 0;
}
