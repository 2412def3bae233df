// SPDX-License-Identifier: MIT
/* Helpers the benchmark bodies share: the scratch directory and the files
 * kept in it, image creation, metadata accounting and queue-depth drivers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

volatile uint64_t bench_sink;

static char dir[4096];
static pthread_mutex_t dir_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local char errmsg[512];

static void seterr(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errmsg, sizeof(errmsg), fmt, ap);
	va_end(ap);
}

const char *bench_errmsg(void)
{
	return errmsg;
}

enum bench_scale bench_scale(void)
{
	const char *s = getenv("UQCOW_BENCH_SCALE");

	if (s && !strcmp(s, "small"))
		return BENCH_SMALL;
	if (s && !strcmp(s, "large"))
		return BENCH_LARGE;
	if (s && !strcmp(s, "huge"))
		return BENCH_HUGE;
	return BENCH_DEFAULT;
}

double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int bench_finish(struct bench_run *r, uq_image *img, int ret, double t0)
{
	return bench_finish_costs(r, img, ret, t0, NULL, 0);
}

int bench_finish_costs(struct bench_run *r, uq_image *img, int ret, double t0,
		       struct bench_costs *c, uint64_t ops)
{
	double t1;

	if (ret == 0)
		ret = uq_flush(img);
	bench_measure_end(r);
	t1 = bench_now();
	if (ret < 0)
		bench_skip(r, uq_errmsg());
	if (ret == 0 && c)
		bench_costs_add(c, img, ops);
	uq_close(img);
	if (ret == 0)
		bench_iteration_time(r, t1 - t0);
	return ret;
}

const char *bench_dir(void)
{
	pthread_mutex_lock(&dir_lock);
	if (!dir[0]) {
		const char *base = getenv("UQCOW_BENCH_DIR");

		snprintf(dir, sizeof(dir), "%s/uqcow-bench.XXXXXX",
			 base && *base ? base : "/tmp");
		if (!mkdtemp(dir)) {
			fprintf(stderr, "uqcow-bench: can't make a directory %s: %s\n",
				dir, strerror(errno));
			exit(1);
		}
	}
	pthread_mutex_unlock(&dir_lock);
	return dir;
}

void bench_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", bench_dir(), name);
}

static void (*cleanups[16])(void);
static unsigned ncleanups;

void bench_on_cleanup(void (*fn)(void))
{
	pthread_mutex_lock(&dir_lock);
	if (ncleanups < sizeof(cleanups) / sizeof(cleanups[0]))
		cleanups[ncleanups++] = fn;
	pthread_mutex_unlock(&dir_lock);
}

void bench_remove_files(void)
{
	DIR *d;
	struct dirent *e;
	char p[4352];

	/* no lock: also called from a signal handler, when nothing else runs
	 * on this thread's behalf any more */
	if (!dir[0] || !(d = opendir(dir)))
		return;
	/* flat: bodies never make subdirectories */
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

void bench_cleanup(void)
{
	/* last registered first: later users may hold earlier ones' files */
	while (ncleanups)
		cleanups[--ncleanups]();
	pthread_mutex_lock(&dir_lock);
	bench_remove_files();
	dir[0] = 0;
	pthread_mutex_unlock(&dir_lock);
}

int bench_fixture(char *buf, size_t len, const char *name,
		  int (*make)(const char *path, void *arg), void *arg)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	char tmp[4200];
	struct stat st;
	int ret = 0;

	bench_path(buf, len, name);
	pthread_mutex_lock(&lock);
	if (stat(buf, &st) < 0) {
		/* made under another name and renamed: a failed make leaves
		 * nothing that a later run would take for finished */
		snprintf(tmp, sizeof(tmp), "%s.part", buf);
		ret = make(tmp, arg);
		if (ret == 0 && rename(tmp, buf) < 0)
			ret = -errno;
		if (ret < 0)
			unlink(tmp);
	}
	pthread_mutex_unlock(&lock);
	return ret;
}

uint64_t bench_full_cache(uint64_t size, uint32_t cluster)
{
	uint64_t tables = (size / cluster + cluster / 8 - 1) / (cluster / 8);

	return (tables + 2) * cluster;
}

int bench_create(const char *path, uint64_t size, uint32_t cluster,
		 uint32_t refcount_bits, uint32_t version, enum uq_prealloc prealloc,
		 const char *backing)
{
	/* Preallocation is setup, not what is measured: uq_create does it
	 * through the engine's default cache, which maps every image the
	 * families preallocate (it covers 256 GiB at 64 KiB clusters). */
	struct uq_create_opts o = {
		.struct_size = sizeof(o),
		.size = size,
		.cluster_size = cluster,
		.refcount_bits = refcount_bits,
		.version = version,
		.prealloc = prealloc,
		.backing_file = backing,
		.backing_format = backing ? "qcow2" : NULL,
	};
	int ret = uq_create(path, &o);

	if (ret < 0)
		seterr("create %s: %s", path, uq_errmsg());
	return ret;
}

#define MEM_MAX (256 << 20)

/* The whole file, malloc'd (for the memory backend). */
static int read_all(const char *path, void **out, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	uint8_t *buf = NULL;
	int ret = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t done = 0; done < (size_t)st.st_size;) {
		ssize_t n = pread(fd, buf + done, (size_t)st.st_size - done, (off_t)done);

		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			goto out;
		}
		done += (size_t)n;
	}
	*out = buf;
	*len = (size_t)st.st_size;
	buf = NULL;
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	if (ret < 0)
		seterr("reading %s: %s", path, strerror(-ret));
	return ret;
}

int bench_open(struct bench_run *r, const char *path, bool rdwr, bool direct,
	       uint64_t l2_cache, uq_image **img)
{
	return bench_open_flags(r, path, (rdwr ? UQ_OPEN_RDWR : 0) |
				(direct ? UQ_OPEN_DIRECT : 0), l2_cache, img);
}

int bench_open_flags(struct bench_run *r, const char *path, unsigned flags,
		     uint64_t l2_cache, uq_image **img)
{
	struct uq_open_opts o = {
		.struct_size = sizeof(o),
		.flags = flags,
		.l2_cache_size = l2_cache,
	};
	bool direct = flags & UQ_OPEN_DIRECT;
	const char *io = getenv("UQCOW_BENCH_IO");
	void *mem = NULL;
	int ret = 0;

	/* UQCOW_BENCH_IO=mem|psync|io_uring: the backend (tools/bench-instr
	 * counts instructions on mem and psync). mem: the file's bytes are
	 * copied in at open, and nothing reaches the file. */
	if (io && !strcmp(io, "psync")) {
		o.backend = UQ_IO_PSYNC;
	} else if (io && !strcmp(io, "io_uring")) {
		o.backend = UQ_IO_URING;
	} else if (io && !strcmp(io, "mem")) {
		struct stat st;

		/* a sparse multi-GiB fixture would be read into memory whole */
		if (stat(path, &st) == 0 && st.st_size > MEM_MAX) {
			seterr("%s is %lld bytes: more than the memory backend takes (%d MiB)",
			       path, (long long)st.st_size, MEM_MAX >> 20);
			if (r)
				bench_unavailable(r, errmsg);
			return -EFBIG;
		}
		o.backend = UQ_IO_MEM;
		o.flags &= ~UQ_OPEN_DIRECT;
		ret = read_all(path, &mem, &o.mem_len);
		o.mem_data = mem;
	}
	if (ret == 0)
		ret = uq_open(path, &o, img);
	free(mem);
	if (ret == 0)
		uq_reset_stats(*img);   /* costs start after the open */
	if (ret < 0) {
		seterr("open %s%s: %s", path, direct ? " (O_DIRECT)" : "", uq_errmsg());
		/* a file system without O_DIRECT says EINVAL at open */
		if (r && direct && ret == -EINVAL)
			bench_unavailable(r, errmsg);
		else if (r)
			bench_skip(r, errmsg);
	}
	return ret;
}

void *bench_buf(size_t len, int pattern)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, len ? len : 4096))
		return NULL;
	memset(p, pattern, len);
	return p;
}

int bench_fill(uq_image *img, uint64_t len)
{
	const size_t chunk = 1u << 20;
	uint8_t *buf = bench_buf(chunk, 0);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (uint64_t off = 0; off < len && ret == 0; off += chunk) {
		size_t n = len - off < chunk ? (size_t)(len - off) : chunk;
		ssize_t w;

		/* distinct content per MiB, never all zeros */
		memset(buf, (int)(0x40 + (off >> 20) % 64), n);
		w = uq_pwrite(img, buf, n, off, 0);
		if (w < 0) {
			seterr("fill at %llu: %s", (unsigned long long)off, uq_errmsg());
			ret = (int)w;
		}
	}
	free(buf);
	if (ret == 0 && (ret = uq_flush(img)) < 0)
		seterr("flush: %s", uq_errmsg());
	return ret;
}

int bench_make_full(const char *path, void *arg)
{
	uint64_t span = *(const uint64_t *)arg;
	uq_image *img;
	int ret = bench_create(path, span, 65536, 16, 3, UQ_PREALLOC_OFF, NULL);

	if (ret == 0)
		ret = bench_open(NULL, path, true, false, bench_full_cache(span, 65536), &img);
	if (ret == 0) {
		ret = bench_fill(img, span);
		uq_close(img);
	}
	return ret;
}

void bench_full_name(char *buf, size_t len, uint64_t span)
{
	snprintf(buf, len, "full-%llu.qcow2", (unsigned long long)span);
}

/* ---- metadata accounting ---- */

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {       /* past the end: reads as zeros */
			memset((uint8_t *)buf + done, 0, len - done);
			break;
		}
		done += (size_t)n;
	}
	return 0;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* bench_meta reads the file's own bytes by the format specification (the
 * benchmarks see the engine through uqcow.h only). */
#define L1_OFFSET     0x00fffffffffffe00ull
#define L2_OFFSET     0x00fffffffffffe00ull
#define L2_COMPRESSED (1ull << 62)
#define EXTENDED_L2   (1ull << 4)   /* incompatible feature bit */

int bench_meta(const char *path, struct bench_meta *m)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	uint8_t head[104];
	uint8_t *tab = NULL, *l2 = NULL;
	uint64_t cs, l1_off, rt_off, esize = 8;
	uint32_t cb, l1_size, rt_clusters;
	int ret;

	memset(m, 0, sizeof(*m));
	if (fd < 0)
		return -errno;
	ret = fstat(fd, &st) < 0 ? -errno : pread_all(fd, head, sizeof(head), 0);
	if (ret < 0)
		goto out;
	cb = be32(head + 20);
	if (memcmp(head, "QFI\xfb", 4) || cb < 9 || cb > 21) {
		ret = -EINVAL;
		goto out;
	}
	cs = 1ull << cb;
	l1_size = be32(head + 36);
	l1_off = be64(head + 40);
	rt_off = be64(head + 48);
	rt_clusters = be32(head + 56);
	if (be32(head + 4) >= 3 && (be64(head + 72) & EXTENDED_L2))
		esize = 16;
	m->file_length = (uint64_t)st.st_size;
	m->disk_bytes = (uint64_t)st.st_blocks * 512;

	/* refcount blocks: the refcount table's entries in use */
	size_t rt_len = (size_t)rt_clusters << cb;

	tab = malloc(rt_len ? rt_len : 8);
	ret = tab ? pread_all(fd, tab, rt_len, rt_off) : -ENOMEM;
	for (size_t i = 0; ret == 0 && i < rt_len / 8; i++)
		m->refcount_blocks += be64(tab + 8 * i) != 0;
	free(tab);
	tab = NULL;
	if (ret < 0)
		goto out;

	/* L2 tables of the active L1 table, and the data clusters they map
	 * (normal or zero with an allocation; compressed ones aside) */
	size_t l1_len = (size_t)l1_size * 8;

	tab = malloc(l1_len ? l1_len : 8);
	l2 = malloc(cs);
	ret = tab && l2 ? pread_all(fd, tab, l1_len, l1_off) : -ENOMEM;
	for (size_t i = 0; ret == 0 && i < l1_size; i++) {
		uint64_t l2_off = be64(tab + 8 * i) & L1_OFFSET;

		if (!l2_off)
			continue;
		m->l2_tables++;
		ret = pread_all(fd, l2, cs, l2_off);
		for (uint64_t j = 0; ret == 0 && j < cs / esize; j++) {
			uint64_t e = be64(l2 + j * esize);

			m->data_clusters += !(e & L2_COMPRESSED) && (e & L2_OFFSET);
		}
	}
	if (ret == 0) {
		uint64_t data = m->data_clusters * cs;

		m->meta_bytes = data < m->file_length ? m->file_length - data : 0;
	}
out:
	free(tab);
	free(l2);
	close(fd);
	if (ret < 0)
		seterr("metadata of %s: %s", path, strerror(-ret));
	return ret;
}

/* ---- queue-depth drivers ---- */

static uint64_t next_off(const struct bench_io *w, uint64_t *seed, uint64_t i)
{
	uint64_t step = w->step ? w->step : w->io;

	if (w->random)
		return (bench_rand(seed) % (w->span / w->io)) * w->io;
	return ((w->first + i) % (w->span / step)) * step;
}

struct drv;

struct slot {
	struct drv *d;
	uint8_t *buf;
	struct slot *next;
};

struct drv {
	struct slot *slots, *free;
	uint64_t done;
	int err;
};

static void slot_done(void *arg, ssize_t res)
{
	struct slot *s = arg;
	struct drv *d = s->d;

	if (res < 0 && !d->err)
		d->err = (int)res;
	s->next = d->free;
	d->free = s;
	d->done++;
}

static int slots_init(struct drv *d, const struct bench_io *w)
{
	memset(d, 0, sizeof(*d));
	d->slots = calloc(w->qd, sizeof(*d->slots));
	if (!d->slots)
		return -ENOMEM;
	for (unsigned i = 0; i < w->qd; i++) {
		d->slots[i].d = d;
		d->slots[i].buf = bench_buf(w->io, 0x5a + (int)i);
		if (!d->slots[i].buf)
			return -ENOMEM;
		d->slots[i].next = d->free;
		d->free = &d->slots[i];
	}
	return 0;
}

static void slots_free(struct drv *d, const struct bench_io *w)
{
	for (unsigned i = 0; d->slots && i < w->qd; i++)
		free(d->slots[i].buf);
	free(d->slots);
}

double bench_qd_image(uq_image *img, const struct bench_io *w)
{
	uint64_t seed = w->seed, issued = 0;
	struct drv d;
	double t0, t1;
	int ret = slots_init(&d, w);

	t0 = bench_now();
	while (ret == 0 && d.done < w->n && !d.err) {
		/* top the queue up, then wait for at least one completion */
		while (d.free && issued < w->n) {
			struct slot *s = d.free;
			uint64_t off = next_off(w, &seed, issued);

			d.free = s->next;
			ret = w->write ? uq_aio_write(img, s->buf, w->io, off, 0, slot_done, s)
				       : uq_aio_read(img, s->buf, w->io, off, slot_done, s);
			if (ret < 0)
				break;
			issued++;
		}
		if (ret == 0) {
			ret = uq_poll(img, 1);
			ret = ret < 0 ? ret : 0;
		}
	}
	/* nothing may complete into the freed slots */
	while (d.done < issued && uq_poll(img, 1) > 0)
		;
	t1 = bench_now();
	if (ret == 0)
		ret = d.err;
	if (ret < 0)
		seterr("%s: %s", w->write ? "write" : "read", uq_errmsg());
	slots_free(&d, w);
	return ret < 0 ? ret : t1 - t0;
}

double bench_qd_raw(int fd, const struct bench_io *w)
{
	struct io_uring ring;
	uint64_t seed = w->seed, issued = 0, done = 0;
	struct drv d;
	double t0, t1;
	int ret = io_uring_queue_init(w->qd, &ring, 0);

	if (ret < 0) {
		seterr("io_uring_queue_init: %s", strerror(-ret));
		return ret == -EPERM ? -ENOSYS : ret;
	}
	ret = slots_init(&d, w);
	t0 = bench_now();
	while (ret == 0 && done < w->n) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;

		while (d.free && issued < w->n) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			struct slot *s = d.free;
			uint64_t off = next_off(w, &seed, issued);

			if (!sqe)
				break;
			d.free = s->next;
			if (w->write)
				io_uring_prep_write(sqe, fd, s->buf, (unsigned)w->io, off);
			else
				io_uring_prep_read(sqe, fd, s->buf, (unsigned)w->io, off);
			io_uring_sqe_set_data(sqe, s);
			issued++;
		}
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0)
			break;
		ret = 0;
		io_uring_for_each_cqe(&ring, head, cqe) {
			struct slot *s = io_uring_cqe_get_data(cqe);

			if (cqe->res != (int)w->io && !ret)
				ret = cqe->res < 0 ? cqe->res : -EIO;
			s->next = d.free;
			d.free = s;
			done++;
			seen++;
		}
		io_uring_cq_advance(&ring, seen);
	}
	t1 = bench_now();
	if (ret < 0)
		seterr("raw %s: %s", w->write ? "write" : "read", strerror(-ret));
	io_uring_queue_exit(&ring);
	slots_free(&d, w);
	return ret < 0 ? ret : t1 - t0;
}

/* ---- exact costs ---- */

void bench_costs_add(struct bench_costs *c, uq_image *img, uint64_t ops)
{
	struct uq_stats s = { .struct_size = sizeof(s) };

	if (uq_get_stats(img, &s) < 0)
		return;
	for (unsigned i = 0; i < UQ_STAT_COUNT; i++)
		c->v[i] += s.v[i];
	c->ops += ops;
	uq_reset_stats(img);
}

void bench_costs_report(struct bench_run *r, const struct bench_costs *c)
{
	static const struct {
		const char *name;
		enum uq_stat a, b;   /* the sum of a and b (b = a: just a) */
	} figs[] = {
		{ "file_ops_per_op", UQ_STAT_FILE_READ_OPS, UQ_STAT_FILE_WRITE_OPS },
		{ "data_reads_per_op", UQ_STAT_DATA_READ_OPS, UQ_STAT_DATA_READ_OPS },
		{ "data_writes_per_op", UQ_STAT_DATA_WRITE_OPS, UQ_STAT_DATA_WRITE_OPS },
		{ "meta_reads_per_op", UQ_STAT_META_READ_OPS, UQ_STAT_META_READ_OPS },
		{ "meta_read_bytes_per_op", UQ_STAT_META_READ_BYTES, UQ_STAT_META_READ_BYTES },
		{ "meta_writes_per_op", UQ_STAT_META_WRITE_OPS, UQ_STAT_META_WRITE_OPS },
		{ "meta_bytes_per_op", UQ_STAT_META_WRITE_BYTES, UQ_STAT_META_WRITE_BYTES },
		{ "l2_writes_per_op", UQ_STAT_L2_WRITE_OPS, UQ_STAT_L2_WRITE_OPS },
		{ "refblock_writes_per_op", UQ_STAT_REFBLOCK_WRITE_OPS,
		  UQ_STAT_REFBLOCK_WRITE_OPS },
		{ "refblock_loads_per_op", UQ_STAT_REFBLOCK_LOADS, UQ_STAT_REFBLOCK_LOADS },
		{ "syncs_per_op", UQ_STAT_FILE_SYNC_OPS, UQ_STAT_FILE_SYNC_OPS },
		{ "punch_ops_per_op", UQ_STAT_FILE_PUNCH_OPS, UQ_STAT_FILE_PUNCH_OPS },
		{ "punch_bytes_per_op", UQ_STAT_FILE_PUNCH_BYTES, UQ_STAT_FILE_PUNCH_BYTES },
		{ "l2_misses_per_op", UQ_STAT_L2_MISSES, UQ_STAT_L2_MISSES },
		{ "clusters_allocated_per_op", UQ_STAT_CLUSTERS_ALLOCATED,
		  UQ_STAT_CLUSTERS_ALLOCATED },
		{ "clusters_freed_per_op", UQ_STAT_CLUSTERS_FREED, UQ_STAT_CLUSTERS_FREED },
		{ "cow_copies_per_op", UQ_STAT_COW_COPIES, UQ_STAT_COW_COPIES },
	};

	if (!c->ops)
		return;
	bench_ops(r, c->ops);
	for (size_t i = 0; i < sizeof(figs) / sizeof(figs[0]); i++) {
		uint64_t n = c->v[figs[i].a] + (figs[i].b != figs[i].a ? c->v[figs[i].b] : 0);

		bench_counter(r, figs[i].name, (double)n / (double)c->ops, 0);
	}
}