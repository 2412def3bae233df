// SPDX-License-Identifier: MIT
/* The asynchronous flush on the real queues (io_uring and psync):
 * uq_aio_flush returns before it has synced anything, requests submitted
 * while it is in flight wait for it and complete after it, and a cluster
 * freed by a discard is punched before anything can reuse it. The last is
 * the interleaving that lost a peer engine data: a stale punch landing on
 * a cluster already reused, as data or as an L2 table. Each round frees a
 * cluster, flushes, and writes where the allocator hands out that very
 * cluster; the content is then checked live, after reopening, by
 * uq_check and by qemu-img (check, and convert to raw compared byte for
 * byte). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

#define ROUNDS 40

struct done {
	int order[3];
	int n;
};

struct tag {
	struct done *d;
	int id;
	ssize_t res;
};

static void cb(void *arg, ssize_t res)
{
	struct tag *t = arg;

	t->res = res;
	t->d->order[t->d->n++] = t->id;
}

static uint64_t stat_of(uq_image *img, enum uq_stat s)
{
	struct uq_stats st = { .struct_size = sizeof(st) };

	CHECK(uq_get_stats(img, &st) == 0);
	return st.v[s];
}

static uint64_t host_of(uq_image *img, uint64_t off, uint64_t len)
{
	struct uq_extent e = { .struct_size = sizeof(e) };

	CHECK(uq_block_status(img, off, len, &e) == 0);
	return e.has_offset ? e.offset : 0;
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((seed * 0x9e3779b97f4a7c15ull + i * 131) >> 13) | 1;
}

/* The guest as written: the first clusters, then one cluster at the
 * start of each later table; everything else reads zeros. */
struct mirror {
	uint8_t *low;            /* [0, nlow * cs) */
	uint64_t nlow;
	uint8_t *tab[3];         /* the cluster at (1 + i) * span */
	uint64_t cs, span, size;
};

static uint8_t *at(struct mirror *m, uint64_t off)
{
	if (off < m->nlow * m->cs)
		return m->low + off;
	CHECK(off % m->span == 0 && off / m->span >= 1 && off / m->span <= 3);
	return m->tab[off / m->span - 1];
}

/* qemu-img check, and qemu-img compare against the same guest as a
 * sparse raw file */
static void qemu_agrees(const char *path, struct mirror *m)
{
	char cmd[1024], raw[300];
	FILE *f;

	snprintf(cmd, sizeof(cmd), "qemu-img check -q %s", path);
	CHECK(system(cmd) == 0);
	snprintf(raw, sizeof(raw), "%s.raw", path);
	f = fopen(raw, "wb");
	CHECK(f != NULL);
	CHECK(fwrite(m->low, 1, m->nlow * m->cs, f) == m->nlow * m->cs);
	for (int i = 0; i < 3; i++) {
		CHECK(fseeko(f, (off_t)((1 + i) * m->span), SEEK_SET) == 0);
		CHECK(fwrite(m->tab[i], 1, m->cs, f) == m->cs);
	}
	CHECK(ftruncate(fileno(f), (off_t)m->size) == 0);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "qemu-img compare -q -f qcow2 -F raw %s %s", path, raw);
	CHECK(system(cmd) == 0);
	unlink(raw);
}

/* The L2 table offset L1 entry i names, read from the closed file. */
static uint64_t l1_entry(const char *path, unsigned i)
{
	uint8_t b[8];
	uint64_t l1 = 0, e = 0;
	FILE *f = fopen(path, "rb");

	CHECK(f != NULL);
	CHECK(fseeko(f, 40, SEEK_SET) == 0 && fread(b, 1, 8, f) == 8);
	for (int k = 0; k < 8; k++)
		l1 = l1 << 8 | b[k];
	CHECK(fseeko(f, (off_t)(l1 + 8 * i), SEEK_SET) == 0 && fread(b, 1, 8, f) == 8);
	for (int k = 0; k < 8; k++)
		e = e << 8 | b[k];
	fclose(f);
	return e & 0x00fffffffffffe00ull;
}

static void run(enum uq_backend be, uint32_t cs, uint32_t bits, int have_qemu)
{
	char path[] = "/tmp/uq-aflush-XXXXXX";
	uint64_t span = (uint64_t)cs / 8 * cs, size = 3 * span + cs;   /* 4 L2 tables */
	struct uq_create_opts co = { .struct_size = sizeof(co), .size = size,
				     .cluster_size = cs, .refcount_bits = bits };
	struct uq_open_opts oo = { .struct_size = sizeof(oo), .flags = UQ_OPEN_RDWR,
				   .backend = be };
	struct uq_check_result res = { .struct_size = sizeof(res) };
	struct mirror m = { .nlow = 16 + ROUNDS, .cs = cs, .span = span, .size = size };
	uint8_t *buf = malloc(cs), *back = malloc(cs);
	uint64_t table_host[3];
	unsigned reused_data = 0, tables = 0;
	uq_image *img;
	int fd = mkstemp(path);
	char where[64];

	snprintf(where, sizeof(where), "%s, %u-byte clusters, %u-bit refcounts",
		 be == UQ_IO_URING ? "io_uring" : "psync", cs, bits);
	test_where = where;
	m.low = calloc(m.nlow, cs);
	for (int i = 0; i < 3; i++)
		m.tab[i] = calloc(1, cs);
	CHECK(fd >= 0 && m.low && m.tab[0] && m.tab[1] && m.tab[2] && buf && back);
	CHECK(m.nlow * cs <= span);
	close(fd);
	CHECK(uq_create(path, &co) == 0);
	CHECK(uq_open(path, &oo, &img) == 0);
	/* the first table's first clusters, all allocated */
	for (uint64_t c = 0; c < 16; c++) {
		fill(m.low + c * cs, cs, c);
		CHECK(uq_pwrite(img, m.low + c * cs, cs, c * cs, 0) == (ssize_t)cs);
	}
	CHECK(uq_flush(img) == 0);

	for (int r = 0; r < ROUNDS; r++) {
		/* free one cluster of the first table; then write either a
		 * hole in the same table (the data reuses the cluster) or,
		 * every fourth round, the first cluster of a table not there
		 * yet (the new L2 table reuses it) */
		bool table = r % 4 == 3 && tables < 3;
		/* a table round frees two: the data takes one, the table the other */
		uint64_t victim = (uint64_t)(r % 15) * cs, vlen = table ? 2 * (uint64_t)cs : cs;
		uint64_t host = host_of(img, victim, cs), host2 = host_of(img, victim + cs, cs);
		uint64_t target = table ? (1 + tables) * span : (16 + (uint64_t)r) * cs;
		struct done d = { .n = 0 };
		struct tag t1 = { &d, 1, 1 }, t2 = { &d, 2, 1 }, t3 = { &d, 3, 1 };
		uint64_t syncs, writes;

		CHECK(host != 0);
		CHECK(uq_aio_discard(img, victim, vlen, cb, &t1) == 0);
		syncs = stat_of(img, UQ_STAT_FILE_SYNC_OPS);
		CHECK(uq_aio_flush(img, cb, &t2) == 0);
		/* returned before any sync: those come as its steps complete */
		CHECK(stat_of(img, UQ_STAT_FILE_SYNC_OPS) == syncs);
		fill(buf, cs, 1000 + (uint64_t)r);
		writes = stat_of(img, UQ_STAT_DATA_WRITE_OPS);
		CHECK(uq_aio_write(img, buf, cs, target, 0, cb, &t3) == 0);
		/* it waits for the flush: nothing of it has gone out */
		CHECK(stat_of(img, UQ_STAT_DATA_WRITE_OPS) == writes);
		while (d.n < 3)
			CHECK(uq_poll(img, 1) >= 0);
		CHECK(t1.res == 0 || t1.res == (ssize_t)vlen);
		CHECK(t2.res == 0);
		CHECK(t3.res == (ssize_t)cs);
		CHECK(d.order[1] == 2 && d.order[2] == 3);   /* flush, then the write */
		CHECK(stat_of(img, UQ_STAT_DATA_WRITE_OPS) > writes);
		memset(at(&m, victim), 0, vlen);
		memcpy(at(&m, target), buf, cs);
		if (table) {
			uint64_t data = host_of(img, target, cs);

			/* the data took one punched cluster, the table the other */
			CHECK(data == host || data == host2);
			table_host[tables++] = data == host ? host2 : host;
		} else if (host_of(img, target, cs) == host) {
			reused_data++;
		}
		/* live: both ranges read what the guest wrote */
		CHECK(uq_pread(img, back, cs, target) == (ssize_t)cs);
		CHECK(memcmp(back, buf, cs) == 0);
		for (uint64_t o = victim; o < victim + vlen; o += cs) {
			CHECK(uq_pread(img, back, cs, o) == (ssize_t)cs);
			CHECK(memcmp(back, at(&m, o), cs) == 0);
			/* refilled, so the next round has a cluster to free */
			fill(at(&m, o), cs, 2000 + (uint64_t)r + o);
			CHECK(uq_pwrite(img, at(&m, o), cs, o, 0) == (ssize_t)cs);
		}
	}
	CHECK(stat_of(img, UQ_STAT_FILE_PUNCH_OPS) >= ROUNDS);
	CHECK(uq_close(img) == 0);
	/* the allocator really handed the punched clusters out: as data, and
	 * as each new L2 table */
	CHECK(reused_data > 0);
	CHECK(tables == 3);
	for (unsigned i = 0; i < 3; i++) {
		if (l1_entry(path, 1 + i) != table_host[i])
			fprintf(stderr, "table %u at 0x%llx, the punched cluster was 0x%llx\n", i,
				(unsigned long long)l1_entry(path, 1 + i),
				(unsigned long long)table_host[i]);
		CHECK(l1_entry(path, 1 + i) == table_host[i]);
	}

	CHECK(uq_open(path, &(struct uq_open_opts){ .struct_size = sizeof(oo), .backend = be },
		      &img) == 0);
	CHECK(uq_check(img, 0, &res) == 0);
	CHECK(res.corruptions == 0 && res.leaks == 0 && res.check_errors == 0);
	for (uint64_t off = 0; off < m.nlow * cs; off += cs) {
		CHECK(uq_pread(img, back, cs, off) == (ssize_t)cs);
		CHECK(memcmp(back, at(&m, off), cs) == 0);
	}
	for (uint64_t i = 1; i <= 3; i++) {
		CHECK(uq_pread(img, back, cs, i * span) == (ssize_t)cs);
		CHECK(memcmp(back, at(&m, i * span), cs) == 0);
	}
	CHECK(uq_close(img) == 0);
	if (have_qemu)
		qemu_agrees(path, &m);
	printf("aflush %s: %d rounds; %u data clusters and 3 L2 tables took a cluster "
	       "punched by the flush before them\n", where, ROUNDS, reused_data);
	unlink(path);
	free(m.low);
	for (int i = 0; i < 3; i++)
		free(m.tab[i]);
	free(buf);
	free(back);
}

int main(void)
{
	static const enum uq_backend bes[] = { UQ_IO_URING, UQ_IO_PSYNC };
	int have_qemu = system("qemu-img --version >/dev/null 2>&1") == 0;

	for (size_t b = 0; b < 2; b++) {
		run(bes[b], 65536, 16, have_qemu);
		run(bes[b], 512, 1, have_qemu);
		run(bes[b], 4096, 64, have_qemu);
	}
	printf("test_aflush: ok%s\n", have_qemu ? "" : " (qemu-img missing: its checks skipped)");
	return 0;
}
