// SPDX-License-Identifier: MIT
/* The crash suite's own reference walk (refwalk.c) and the refcount check on
 * it: clean images of every kind count clean, planted refcount errors are
 * caught, on clean states and on dirty ones the engine's open rebuilds. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crash.h"
#include "refwalk.h"
#include "test.h"

static const uint32_t widths[] = { 1, 2, 4, 8, 16, 32, 64 };
#define NWIDTHS (sizeof(widths) / sizeof(widths[0]))

static char dir[64];
static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint8_t *slurp(const char *path, uint64_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	uint8_t *p;

	CHECK(f && fstat(fileno(f), &st) == 0);
	p = malloc((size_t)st.st_size + 1);
	CHECK(p && fread(p, 1, (size_t)st.st_size, f) == (size_t)st.st_size);
	fclose(f);
	*len = (uint64_t)st.st_size;
	return p;
}

/* ---- the plant: an engine rebuild that misses one reference ---- */

/* Linked with -Wl,--wrap=uq_count_refs, so the engine's own calls (the
 * rebuild of a dirty image's refcounts when it is opened read-write) come
 * here, and can be made to drop one reference, as a bug in that count
 * would. The old check counted with the same function. */
int __real_uq_count_refs(uq_image *img, uint64_t **counts, uint64_t *n);
int __wrap_uq_count_refs(uq_image *img, uint64_t **counts, uint64_t *n);

static uint64_t plant = UINT64_MAX;   /* the cluster whose reference is dropped */
static unsigned wrapped;              /* calls that came through the wrapper */

int __wrap_uq_count_refs(uq_image *img, uint64_t **counts, uint64_t *n)
{
	int ret = __real_uq_count_refs(img, counts, n);

	wrapped++;
	if (ret == 0 && plant < *n && (*counts)[plant])
		(*counts)[plant]--;
	return ret;
}

/* The refcount check the crash suite made before refwalk.c, verbatim in
 * substance: uq_count_refs (here the wrapped one, as every call in this
 * program) plus the refcount structures against the stored refcounts.
 * Returns the clusters it finds too low. */
static uint64_t old_check(uq_image *img)
{
	uint64_t cs = img->g.cluster_size, *counts, n, bad = 0;

	CHECK(__wrap_uq_count_refs(img, &counts, &n) == 0);
	for (uint64_t i = 0; i < img->h.refcount_table_clusters; i++) {
		uint64_t c = img->h.refcount_table_offset / cs + i;

		if (c < n)
			counts[c]++;
	}
	for (uint64_t i = 0; i < img->rc.entries; i++)
		if (img->rc.table[i] && img->rc.table[i] / cs < n)
			counts[img->rc.table[i] / cs]++;
	for (uint64_t c = 0; c < n; c++) {
		uint64_t v;

		if (!counts[c])
			continue;
		CHECK(uq_rc_get(img, c, &v) == 0);
		bad += v < counts[c];
	}
	free(counts);
	return bad;
}

/* ---- clean images count clean ---- */

/* No problem and no difference: the walk and the file agree exactly. */
static void expect_exact(const uint8_t *file, uint64_t len, const char *what)
{
	struct rw_result res;

	CHECK(refwalk(file, len, &res) == 0);
	if (res.nproblems || res.ndiff) {
		fprintf(stderr, "%s: %u problems (%s), %zu differences\n", what, res.nproblems,
			res.problem, res.ndiff);
		for (size_t i = 0; i < res.ndiff && i < 8; i++)
			fprintf(stderr, "  cluster 0x%llx: %llu references, refcount %llu%s\n",
				(unsigned long long)res.diff[i].cluster,
				(unsigned long long)res.diff[i].refs,
				(unsigned long long)res.diff[i].stored,
				res.diff[i].unknown ? " (unreadable)" : "");
		test_where = what;
		CHECK(res.nproblems == 0 && res.ndiff == 0);
	}
	refwalk_free(&res);
}

/* The engine's check agrees that an image is clean: then any difference
 * the walk finds is the walk's. */
static void expect_clean(const char *path, const char *what)
{
	struct uq_open_opts o = { .struct_size = sizeof(o) };
	struct uq_check_result cr = { .struct_size = sizeof(cr) };
	uq_image *img;
	uint64_t len;
	uint8_t *file;

	test_where = what;
	CHECK(uq_open(path, &o, &img) == 0);
	CHECK(uq_check(img, 0, &cr) == 0);
	CHECK(cr.corruptions == 0 && cr.leaks == 0 && cr.check_errors == 0);
	uq_close(img);
	file = slurp(path, &len);
	expect_exact(file, len, what);
	free(file);
	test_where = "";
}

struct kind {
	uint32_t cs, bits, version;
	int extl2, lazy, datafile;
};

/* Writes of every shape, compressed writes, zeroes that keep their
 * allocation, discards, and (where the width and format allow) two
 * snapshots with rewrites between them, one deleted again. */
static void make_image(const char *path, const struct kind *k)
{
	char data[96];
	struct uq_create_opts co = { .struct_size = sizeof(co), .size = 96ull * k->cs,
				     .cluster_size = k->cs, .refcount_bits = k->bits,
				     .version = k->version, .extended_l2 = k->extl2,
				     .lazy_refcounts = k->lazy };
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR };
	uint8_t *buf = malloc(4 * k->cs);
	uq_image *img;
	bool snaps = k->bits >= 2 && !k->datafile;

	CHECK(buf);
	if (k->datafile) {
		snprintf(data, sizeof(data), "%s.data", path);
		co.data_file = data;
	}
	CHECK(uq_create(path, &co) == 0);
	CHECK(uq_open(path, &o, &img) == 0);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 24; i++) {
			uint64_t c = test_rand() % 90, r = test_rand() % 8;

			memset(buf, (int)(test_rand() | 1), 4 * k->cs);
			if (r < 3) {
				uint64_t off = c * k->cs + test_rand() % k->cs / 512 * 512;

				CHECK(uq_pwrite(img, buf, 1 + test_rand() % (3 * k->cs), off, 0) >= 0);
			} else if (r == 3 && k->version == 3 && !k->datafile) {
				CHECK(uq_pwrite(img, buf, k->cs, c * k->cs, UQ_WRITE_COMPRESSED) ==
				      (ssize_t)k->cs);
			} else if (r == 4) {
				CHECK(uq_write_zeroes(img, c * k->cs, 2 * k->cs, 0) == 0);
			} else if (r == 5) {
				CHECK(uq_discard(img, c * k->cs, k->cs) == 0);
			} else {
				CHECK(uq_pwrite(img, buf, 2 * k->cs, c * k->cs, 0) ==
				      (ssize_t)(2 * k->cs));
			}
		}
		/* a refusal for the width (-ERANGE) changes nothing */
		if (snaps && round < 2) {
			int r = uq_snapshot_create(img, round ? "two" : "one");

			CHECK(r == 0 || r == -ERANGE);
		}
	}
	if (snaps) {
		int r = uq_snapshot_delete(img, "one");

		CHECK(r == 0 || r == -ENOENT);
	}
	CHECK(uq_close(img) == 0);
	free(buf);
}

static void clean_uqcow_images(void)
{
	static const struct kind more[] = {
		{ 4096, 16, 2, 0, 0, 0 },   /* v2 */
		{ 65536, 16, 3, 1, 0, 0 },  /* extended L2 entries */
		{ 32768, 4, 3, 1, 0, 0 },
		{ 4096, 16, 3, 0, 1, 0 },   /* lazy refcounts, closed cleanly */
		{ 4096, 16, 3, 0, 0, 1 },   /* external data file */
	};
	char path[128], what[160];
	unsigned n = 0;

	snprintf(path, sizeof(path), "%s/clean.qcow2", dir);
	for (size_t i = 0; i < NWIDTHS; i++)
		for (uint32_t cs = 512; cs <= 65536; cs *= 128) {
			struct kind k = { cs, widths[i], 3, 0, 0, 0 };

			snprintf(what, sizeof(what), "uqcow image cs=%u bits=%u", cs, widths[i]);
			make_image(path, &k);
			expect_clean(path, what);
			n++;
		}
	for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
		snprintf(what, sizeof(what), "uqcow image cs=%u bits=%u v%u extl2=%d lazy=%d "
			 "data_file=%d", more[i].cs, more[i].bits, more[i].version, more[i].extl2,
			 more[i].lazy, more[i].datafile);
		make_image(path, &more[i]);
		expect_clean(path, what);
		n++;
	}
	/* widths changed by amend: the new structures, the old ones freed */
	for (size_t i = 0; i < NWIDTHS; i++) {
		struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR };
		struct kind k = { 512, 16, 3, 0, 0, 0 };
		uq_image *img;
		int r;

		make_image(path, &k);
		CHECK(uq_open(path, &o, &img) == 0);
		r = uq_amend_refcount_bits(img, widths[i]);
		CHECK(r == 0 || r == -ERANGE);   /* snapshots need 2 bits or more */
		CHECK(uq_close(img) == 0);
		snprintf(what, sizeof(what), "uqcow image amended to refcount_bits=%u", widths[i]);
		expect_clean(path, what);
		n++;
	}
	unlink(path);
	snprintf(what, sizeof(what), "%s.data", path);
	unlink(what);
	printf("refwalk: %u images uqcow wrote count exactly as stored\n", n);
}

/* qemu-img made: bitmaps (directory, tables, data), snapshots, compressed
 * and zero clusters, extended L2, v2, and 1-bit and 64-bit refcounts. */
static int qemu(const char *cmd)
{
	char full[1024];

	snprintf(full, sizeof(full), "cd '%s' && ( %s ) >/dev/null 2>&1", dir, cmd);
	return system(full);
}

static void clean_qemu_images(void)
{
	static const char *const recipes[] = {
		/* one shell command each, in parentheses (clang: not a missing comma) */
		("qemu-img create -q -f qcow2 -o cluster_size=4k,refcount_bits=4 q.qcow2 64M && "
		 "qemu-img bitmap --add q.qcow2 b0 && qemu-img bitmap --add -g 512 q.qcow2 b1 && "
		 "qemu-io -c 'write -P 1 0 8M' -c 'write -c -P 2 16M 64k' -c 'write -z 20M 1M' "
		 "q.qcow2 && qemu-io -c 'write -P 3 1M 1M' q.qcow2"),
		("qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 q.qcow2 2M && "
		 "qemu-io -c 'write -P 1 0 1M' -c 'write -c -P 2 1M 64k' q.qcow2 && "
		 "qemu-img snapshot -c s1 q.qcow2 && qemu-io -c 'write -P 4 4k 8k' "
		 "-c 'write -z 64k 64k' -c 'discard 128k 64k' q.qcow2 && "
		 "qemu-img snapshot -c s2 q.qcow2 && qemu-io -c 'write -P 5 0 16k' q.qcow2 && "
		 "qemu-img snapshot -d s1 q.qcow2"),
		("qemu-img create -q -f qcow2 -o cluster_size=64k,extended_l2=on q.qcow2 16M && "
		 "qemu-io -c 'write -P 1 4k 8k' -c 'write -c -P 2 1M 64k' -c 'write -z 2M 64k' "
		 "-c 'write -P 3 3M 2M' q.qcow2 && qemu-img snapshot -c s q.qcow2 && "
		 "qemu-io -c 'write -P 6 3M 4k' q.qcow2"),
		("qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4k q.qcow2 8M && "
		 "qemu-io -c 'write -P 1 0 1M' -c 'write -c -P 2 2M 4k' q.qcow2 && "
		 "qemu-img snapshot -c s q.qcow2 && qemu-io -c 'write -P 3 0 8k' q.qcow2"),
		("qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 q.qcow2 1M && "
		 "qemu-io -c 'write -P 1 0 256k' -c 'write -z 8k 8k' -c 'discard 64k 8k' q.qcow2"),
	};
	char path[128];
	uint64_t len;
	uint8_t *file;

	if (system("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		printf("refwalk: qemu-img/qemu-io missing: images qemu wrote not walked\n");
		return;
	}
	snprintf(path, sizeof(path), "%s/q.qcow2", dir);
	for (size_t i = 0; i < sizeof(recipes) / sizeof(recipes[0]); i++) {
		char what[32];

		snprintf(what, sizeof(what), "qemu image %zu", i);
		test_where = what;
		CHECK(qemu(recipes[i]) == 0);
		CHECK(qemu("qemu-img check q.qcow2") == 0);   /* clean by qemu's count */
		file = slurp(path, &len);
		expect_exact(file, len, what);
		if (i == 0) {
			/* bitmaps are counted only while the autoclear bit vouches
			 * for them: without it their clusters are leaks */
			struct rw_result res;
			size_t leaks = 0;

			file[95] &= (uint8_t)~1u;
			CHECK(refwalk(file, len, &res) == 0 && res.nproblems == 0);
			for (size_t j = 0; j < res.ndiff; j++)
				leaks += res.diff[j].stored > res.diff[j].refs;
			CHECK(leaks == res.ndiff && leaks >= 4);   /* directory, 2 tables, data */
			refwalk_free(&res);
		}
		free(file);
	}
	test_where = "";
	unlink(path);
	printf("refwalk: %zu images qemu wrote (bitmaps, snapshots, v2, extended L2) count "
	       "exactly as stored\n", sizeof(recipes) / sizeof(recipes[0]));
}

/* ---- planted errors ---- */

/* Set the stored refcount of cluster c in a file in memory. */
static void set_refcount(uint8_t *file, uint64_t c, uint64_t v)
{
	uint32_t cb = (uint32_t)file[23], order = (uint32_t)file[99];
	uint64_t per = (8ull << cb) >> order, bits = 1ull << order;
	uint64_t blk = be64(file + be64(file + 48) + 8 * (c / per)) & ~511ull, j = c % per;

	CHECK(blk);
	if (bits < 8) {
		uint8_t *p = file + blk + j * bits / 8, sh = (uint8_t)(j * bits % 8);

		*p = (uint8_t)((*p & ~(((1u << bits) - 1) << sh)) | v << sh);
		return;
	}
	for (uint64_t k = 0; k < bits / 8; k++)
		file[blk + j * (bits / 8) + k] = (uint8_t)(v >> (8 * (bits / 8 - 1 - k)));
}

/* One refcount lowered in the stored bytes of a clean image, at every
 * width: the walk names exactly that cluster. */
static void planted_in_file(void)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/plant.qcow2", dir);
	for (size_t i = 0; i < NWIDTHS; i++) {
		struct kind k = { 512, widths[i], 3, 0, 0, 0 };
		struct uq_open_opts o = { .struct_size = sizeof(o) };
		struct rw_result res;
		struct uq_extent e;
		uq_image *img;
		uint64_t len, c;
		uint8_t *file;

		make_image(path, &k);
		CHECK(uq_open(path, &o, &img) == 0);
		/* the first guest cluster with data of its own */
		for (uint64_t off = 0;; off += 512) {
			e.struct_size = sizeof(e);
			CHECK(uq_block_status(img, off, 512, &e) == 0 && off < 96 * 512);
			if (e.data && e.has_offset && !e.compressed)
				break;
		}
		uq_close(img);
		c = e.offset / 512;
		file = slurp(path, &len);
		set_refcount(file, c, 0);
		CHECK(refwalk(file, len, &res) == 0 && res.nproblems == 0);
		CHECK(res.ndiff == 1 && res.diff[0].cluster == c && res.diff[0].stored == 0 &&
		      res.diff[0].refs >= 1);
		refwalk_free(&res);
		free(file);
	}
	unlink(path);
	printf("refwalk: a refcount lowered in the file is found at every width\n");
}

static void remove_failure_files(struct run *R)
{
	char p[160];

	for (unsigned long i = 0; i <= R->failures; i++) {
		snprintf(p, sizeof(p), "%s/fail-%lu.qcow2", R->dir, i);
		unlink(p);
	}
	R->failures = 0;
}

/* The state a crash right after the last flush leaves: every op whole. */
static void last_state(const struct run *R, struct io_fault_image *st)
{
	CHECK(io_fault_image_base(R->fl, st) == 0);
	for (size_t i = 0; i < io_fault_nops(R->fl); i++)
		CHECK(io_fault_image_apply(st, io_fault_op(R->fl, i), UINT64_MAX) == 0);
}

/* The engine's writable open of a state: its file bytes after the open. */
static uint8_t *after_open(const struct io_fault_image *st, uq_image **img, uint64_t *len)
{
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR,
				  .backend = UQ_IO_MEM, .mem_data = st->data,
				  .mem_len = st->len };
	uint8_t *file;

	CHECK(uq_open("state", &o, img) == 0);
	CHECK(io_file_size((*img)->file, len) == 0);
	file = malloc(*len);
	CHECK(file && io_pread_full((*img)->file, file, *len, 0) == 0);
	return file;
}

/* A dirty state (lazy refcounts, the dirty bit set, refcounts on disk
 * behind the L2 tables): the engine rebuilds its refcounts when it opens
 * it. A rebuild that drops a reference leaves too low a refcount: the
 * check finds it, where the old one, counting with the same function as
 * the rebuild, agreed with it. */
static void planted_in_rebuild(void)
{
	struct cfg c = { .cs = 512, .bits = 16, .lazy = 1, .size = 64 << 10, .seed = 5 };
	struct run R = { .samples_per_interval = 1 };
	struct io_fault_image st;
	struct rw_result res;
	size_t level, glo, ghi, stale = 0;
	const char *const what[] = { "the active L1 table", "the snapshot table" };
	uint64_t targets[2];

	CHECK(run_start(&R, "refwalk", &c) == 0);
	for (int i = 0; i < 12; i++)
		g_write(&R, test_rand() % 120 * 512, 512 * (1 + test_rand() % 4), 0);
	g_snapshot(&R, 'c', "s");
	for (int i = 0; i < 12; i++)
		g_write(&R, test_rand() % 120 * 512, 512 * (1 + test_rand() % 4), 0);
	g_flush(&R);
	CHECK(R.failures == 0);
	last_state(&R, &st);
	CHECK(st.len >= 80 && (st.data[79] & 1));   /* dirty */
	level = R.nsnaps - 1;
	glo = R.snaps[level].ngops;
	ghi = R.ngops;

	/* as the crash left it, its refcounts are behind its references */
	CHECK(refwalk(st.data, st.len, &res) == 0 && res.dirty);
	for (size_t i = 0; i < res.ndiff; i++)
		stale += res.diff[i].stored < res.diff[i].refs;
	CHECK(stale > 0);
	refwalk_free(&res);

	/* the engine's rebuild makes it whole: no failure */
	wrapped = 0;
	CHECK(check_image(&R, &st, level, glo, ghi, false, "dirty state") == 0);
	CHECK(R.failures == 0);
	CHECK(wrapped > 0);   /* the open rebuilt through uq_count_refs */

	targets[0] = be64(st.data + 40) / 512;
	targets[1] = be64(st.data + 64) / 512;
	for (int t = 0; t < 2; t++) {
		uq_image *img;
		uint64_t len;
		uint8_t *file;

		plant = targets[t];
		wrapped = 0;
		file = after_open(&st, &img, &len);
		CHECK(wrapped > 0);
		CHECK(!(file[79] & 1));   /* rebuilt, marked clean */
		/* the old check: the same count as the rebuild, so it agrees */
		CHECK(old_check(img) == 0);
		/* the walk: exactly the dropped reference */
		CHECK(refwalk(file, len, &res) == 0 && res.nproblems == 0);
		CHECK(res.ndiff >= 1 && res.diff[0].cluster == plant && res.diff[0].stored == 0 &&
		      res.diff[0].refs == 1);
		for (size_t i = 1; i < res.ndiff; i++)
			CHECK(res.diff[i].stored > res.diff[i].refs);   /* the rest: leaks */
		refwalk_free(&res);
		free(file);
		uq_close(img);
		/* and the crash suite's check of the state fails on it */
		fprintf(stderr, "refwalk: an expected failure follows (the rebuild drops the "
			"reference to %s):\n", what[t]);
		CHECK(check_image(&R, &st, level, glo, ghi, false, "dirty state, planted") < 0);
		CHECK(R.failures == 1);
		remove_failure_files(&R);
		printf("refwalk: a dirty state whose rebuild drops the reference to %s: the "
		       "old check passes it, the walk finds it\n", what[t]);
	}
	plant = UINT64_MAX;
	io_fault_image_free(&st);

	/* a clean state (after close) with a refcount lowered in the file */
	CHECK(run_close(&R) == 0);
	last_state(&R, &st);
	CHECK(!(st.data[79] & 1));
	set_refcount(st.data, be64(st.data + 40) / 512, 0);
	fprintf(stderr, "refwalk: an expected failure follows (a clean state with the L1 "
		"table's refcount at 0):\n");
	CHECK(check_image(&R, &st, R.nsnaps - 1, R.ngops, R.ngops, false, "clean, planted") < 0);
	CHECK(R.failures >= 1);
	remove_failure_files(&R);
	io_fault_image_free(&st);
	run_free(&R);
}

/* ---- torn and garbled states don't crash the walk ---- */

static void garbled(void)
{
	struct kind k = { 512, 16, 3, 0, 0, 0 };
	char path[128];
	uint64_t len, n = 0;
	uint8_t *file, *copy;
	struct rw_result res;

	snprintf(path, sizeof(path), "%s/garble.qcow2", dir);
	make_image(path, &k);
	file = slurp(path, &len);
	copy = malloc(len);
	CHECK(copy);
	/* cut short anywhere */
	for (uint64_t l = 0; l <= len; l += 1 + test_rand() % 700, n++) {
		memcpy(copy, file, l);
		if (refwalk(copy, l, &res) == 0)
			refwalk_free(&res);
	}
	/* random bytes in the metadata (the first clusters) and anywhere */
	for (int i = 0; i < 3000; i++, n++) {
		memcpy(copy, file, len);
		for (int j = 0; j < 1 + i % 8; j++) {
			uint64_t at = i % 2 ? test_rand() % (len < 16384 ? len : 16384) : test_rand() % len;

			copy[at] = (uint8_t)test_rand();
		}
		if (refwalk(copy, len, &res) == 0)
			refwalk_free(&res);
	}
	free(copy);
	free(file);
	unlink(path);
	printf("refwalk: %llu torn or garbled files walked without harm\n", (unsigned long long)n);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "%s/uqrefwalk.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	CHECK(mkdtemp(dir));
	clean_uqcow_images();
	clean_qemu_images();
	planted_in_file();
	planted_in_rebuild();
	garbled();
	rmdir(dir);
	printf("test_refwalk: ok\n");
	return 0;
}
