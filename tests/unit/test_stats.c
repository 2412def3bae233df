// SPDX-License-Identifier: MIT
/* Exact costs: for small workloads worked out by hand from the metadata
 * order (increases, sync, L2, sync, L1, sync, decreases, sync), every
 * counter uq_get_stats reports, at refcount widths 1, 16 and 64, on
 * io_uring and psync. A counter not listed must be 0. Also the accounting
 * identity: what reached the file is the data plus the metadata the engine
 * classified. Links only the public library. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

#define CS 4096u           /* 4 KiB clusters: one L2 table maps 2 MiB */
#define L1_BYTES 64u       /* 16 MiB / 2 MiB per L2 table = 8 entries */

struct want {
	const char *name;
	uint64_t v;
};

static unsigned stat_index(const char *name)
{
	for (unsigned i = 0; uq_stat_name(i); i++)
		if (!strcmp(uq_stat_name(i), name))
			return i;
	fprintf(stderr, "no counter named %s\n", name);
	exit(1);
}

static void get(uq_image *img, struct uq_stats *s)
{
	s->struct_size = sizeof(*s);
	CHECK(uq_get_stats(img, s) == 0);
}

/* The identities that hold for any workload on an image without backing. */
static void check_identity(const struct uq_stats *s)
{
	const uint64_t *v = s->v;

	CHECK(v[UQ_STAT_FILE_READ_OPS] == v[UQ_STAT_DATA_READ_OPS] + v[UQ_STAT_META_READ_OPS]);
	CHECK(v[UQ_STAT_FILE_READ_BYTES] ==
	      v[UQ_STAT_DATA_READ_BYTES] + v[UQ_STAT_META_READ_BYTES]);
	CHECK(v[UQ_STAT_FILE_WRITE_OPS] ==
	      v[UQ_STAT_DATA_WRITE_OPS] + v[UQ_STAT_META_WRITE_OPS]);
	CHECK(v[UQ_STAT_FILE_WRITE_BYTES] ==
	      v[UQ_STAT_DATA_WRITE_BYTES] + v[UQ_STAT_META_WRITE_BYTES]);
}

/* Every counter equals its listed value, or 0; derived sums are checked
 * through the identity, so lists name only what they mean to. */
static void expect(uq_image *img, const char *what, const struct want *w, size_t n)
{
	struct uq_stats s;
	uint64_t want[UQ_STAT_COUNT] = { 0 };
	bool listed[UQ_STAT_COUNT] = { false };

	get(img, &s);
	for (size_t i = 0; i < n; i++) {
		unsigned k = stat_index(w[i].name);

		want[k] = w[i].v;
		listed[k] = true;
	}
	for (unsigned k = 0; k < UQ_STAT_COUNT; k++) {
		bool derived = k >= UQ_STAT_FILE_READ_OPS && k <= UQ_STAT_META_WRITE_BYTES;

		if (derived && !listed[k])
			continue;
		if (s.v[k] != want[k]) {
			fprintf(stderr, "[%s] %s: %s is %llu, want %llu\n", test_where, what,
				uq_stat_name(k), (unsigned long long)s.v[k],
				(unsigned long long)want[k]);
			exit(1);
		}
	}
	check_identity(&s);
}

#define EXPECT(img, what, ...) do { \
	const struct want w_[] = { __VA_ARGS__ }; \
	expect(img, what, w_, sizeof(w_) / sizeof(w_[0])); \
} while (0)

static uq_image *fresh(const char *path, unsigned bits, enum uq_backend be,
		       const char *backing)
{
	struct uq_create_opts co = { .struct_size = sizeof(co), .size = 16 << 20,
				     .cluster_size = CS, .refcount_bits = bits,
				     .backing_file = backing,
				     .backing_format = backing ? "qcow2" : NULL };
	struct uq_open_opts oo = { .struct_size = sizeof(oo), .flags = UQ_OPEN_RDWR,
				   .backend = be };
	uq_image *img = NULL;

	CHECK(uq_create(path, &co) == 0);
	CHECK(uq_open(path, &oo, &img) == 0);
	CHECK(uq_reset_stats(img) == 0);
	return img;
}

static uint8_t buf[2 << 20];

/* Fresh image: the write allocates an L2 table and a data cluster, which
 * loads the one refcount block. The flush writes that block, syncs, writes
 * the L2 table, syncs, writes the L1 table, syncs. The width doesn't
 * matter: one block covers the 16 MiB file at every width. */
static void alloc_write(const char *path, unsigned bits, enum uq_backend be)
{
	uq_image *img = fresh(path, bits, be, NULL);

	CHECK(uq_pwrite(img, buf, 4096, 0, 0) == 4096);
	CHECK(uq_flush(img) == 0);
	EXPECT(img, "allocating write",
	       { "req_write_ops", 1 }, { "req_write_bytes", 4096 }, { "req_flush_ops", 1 },
	       { "file_read_ops", 1 }, { "file_read_bytes", CS },
	       { "file_write_ops", 4 }, { "file_write_bytes", 4096 + 2 * CS + L1_BYTES },
	       { "file_sync_ops", 3 },
	       { "data_write_ops", 1 }, { "data_write_bytes", 4096 },
	       { "refblock_read_ops", 1 }, { "refblock_read_bytes", CS },
	       { "refblock_write_ops", 1 }, { "refblock_write_bytes", CS },
	       { "l2_write_ops", 1 }, { "l2_write_bytes", CS },
	       { "l1_write_ops", 1 }, { "l1_write_bytes", L1_BYTES },
	       { "l2_writebacks", 1 }, { "refblock_loads", 1 }, { "refblock_writebacks", 1 },
	       { "clusters_allocated", 2 }, { "meta_flushes", 1 });

	/* a second flush has nothing to write, and nothing changed since the
	 * last sync: no sync at all */
	CHECK(uq_reset_stats(img) == 0);
	CHECK(uq_flush(img) == 0);
	EXPECT(img, "empty flush", { "req_flush_ops", 1 });
	/* an in-place rewrite makes the next flush sync once, for the data */
	CHECK(uq_pwrite(img, buf, 4096, 0, 0) == 4096);
	CHECK(uq_reset_stats(img) == 0);
	CHECK(uq_flush(img) == 0);
	EXPECT(img, "data-only flush", { "req_flush_ops", 1 }, { "file_sync_ops", 1 });
	CHECK(uq_close(img) == 0);
}

/* Discards after a 4 KiB write at 0 and a 2 MiB write over it (one L2
 * table's worth, 512 clusters). Host clusters: 0 header, 1 refcount
 * table, 2 refcount block, 3 L1, 4 the first write (data is allocated
 * before the L2 table that maps it), 5 the L2 table, 6..516 the rest. At
 * 64 bits a block covers 512 clusters: cluster 512 needed a second block,
 * which took cluster 512 itself (data 6..511 and 513..517), so the freed
 * clusters are split there, and both blocks change. Nothing changed since
 * the last flush's sync, so the discard's flush syncs only after what it
 * writes itself. */
static uq_image *written_table(const char *path, unsigned bits, enum uq_backend be)
{
	uq_image *img = fresh(path, bits, be, NULL);

	CHECK(uq_pwrite(img, buf, 4096, 0, 0) == 4096);
	CHECK(uq_pwrite(img, buf, 2 << 20, 0, 0) == 2 << 20);
	CHECK(uq_flush(img) == 0);
	CHECK(uq_reset_stats(img) == 0);
	return img;
}

/* The whole table's range: the table is dropped, not written. Its L1
 * entry is cleared (L1 write, sync), then the data and the table itself
 * (cluster 5, between the data clusters) are freed in one run, one punch
 * (two at 64 bits), and the blocks written, sync. */
static void discard_table(const char *path, unsigned bits, enum uq_backend be)
{
	uq_image *img = written_table(path, bits, be);
	uint64_t blocks = bits == 64 ? 2 : 1;

	CHECK(uq_discard(img, 0, 2 << 20) == 0);
	CHECK(uq_flush(img) == 0);
	EXPECT(img, "discard of one L2 table",
	       { "req_discard_ops", 1 }, { "req_discard_bytes", 2 << 20 },
	       { "req_flush_ops", 1 },
	       { "file_write_ops", 1 + blocks }, { "file_write_bytes", L1_BYTES + blocks * CS },
	       { "file_sync_ops", 2 },
	       { "file_punch_ops", blocks }, { "file_punch_bytes", 513 * CS },
	       { "l1_write_ops", 1 }, { "l1_write_bytes", L1_BYTES },
	       { "refblock_write_ops", blocks }, { "refblock_write_bytes", blocks * CS },
	       { "l2_hits", 512 }, { "refblock_writebacks", blocks },
	       { "clusters_freed", 513 }, { "meta_flushes", 1 }, { "l2_tables_freed", 1 });
	CHECK(uq_close(img) == 0);
}

/* The same after a reopen, with the table not in the cache: it is read
 * once around the cache (an L2 read, no miss, no hit), and the cache
 * stays empty; the refcount blocks are loaded for the frees. */
static void discard_table_cold(const char *path, unsigned bits, enum uq_backend be)
{
	struct uq_open_opts oo = { .struct_size = sizeof(oo), .flags = UQ_OPEN_RDWR,
				   .backend = be };
	uq_image *img = written_table(path, bits, be);
	uint64_t blocks = bits == 64 ? 2 : 1;

	CHECK(uq_close(img) == 0);
	CHECK(uq_open(path, &oo, &img) == 0);
	CHECK(uq_reset_stats(img) == 0);
	CHECK(uq_discard(img, 0, 2 << 20) == 0);
	CHECK(uq_flush(img) == 0);
	EXPECT(img, "discard of one L2 table not in the cache",
	       { "req_discard_ops", 1 }, { "req_discard_bytes", 2 << 20 },
	       { "req_flush_ops", 1 },
	       { "file_read_ops", 1 + blocks }, { "file_read_bytes", CS + blocks * CS },
	       { "file_write_ops", 1 + blocks }, { "file_write_bytes", L1_BYTES + blocks * CS },
	       { "file_sync_ops", 2 },
	       { "file_punch_ops", blocks }, { "file_punch_bytes", 513 * CS },
	       { "l2_read_ops", 1 }, { "l2_read_bytes", CS },
	       { "refblock_read_ops", blocks }, { "refblock_read_bytes", blocks * CS },
	       { "l1_write_ops", 1 }, { "l1_write_bytes", L1_BYTES },
	       { "refblock_write_ops", blocks }, { "refblock_write_bytes", blocks * CS },
	       { "refblock_loads", blocks }, { "refblock_writebacks", blocks },
	       { "clusters_freed", 513 }, { "meta_flushes", 1 }, { "l2_tables_freed", 1 });
	CHECK(uq_close(img) == 0);
}

/* All but the first cluster: the entries are cleared and the table
 * written (sync), then the 511 data clusters freed, one punch (two at 64
 * bits), and the blocks written, sync. */
static void discard_entries(const char *path, unsigned bits, enum uq_backend be)
{
	uq_image *img = written_table(path, bits, be);
	uint64_t blocks = bits == 64 ? 2 : 1;

	CHECK(uq_discard(img, 4096, (2 << 20) - 4096) == 0);
	CHECK(uq_flush(img) == 0);
	EXPECT(img, "discard of 511 entries",
	       { "req_discard_ops", 1 }, { "req_discard_bytes", (2 << 20) - 4096 },
	       { "req_flush_ops", 1 },
	       { "file_write_ops", 1 + blocks }, { "file_write_bytes", CS + blocks * CS },
	       { "file_sync_ops", 2 },
	       { "file_punch_ops", blocks }, { "file_punch_bytes", 511 * CS },
	       { "l2_write_ops", 1 }, { "l2_write_bytes", CS },
	       { "refblock_write_ops", blocks }, { "refblock_write_bytes", blocks * CS },
	       { "l2_hits", 511 }, { "l2_writebacks", 1 }, { "refblock_writebacks", blocks },
	       { "clusters_freed", 511 }, { "meta_flushes", 1 });
	CHECK(uq_close(img) == 0);
}

/* A compressed cluster: like the allocating write, but the data is the
 * compressed bytes (their count depends on zlib, so it is read back and
 * bounded, not predicted). */
static void compressed(const char *path, unsigned bits, enum uq_backend be)
{
	uq_image *img = fresh(path, bits, be, NULL);
	struct uq_stats s;
	uint64_t z;

	CHECK(uq_pwrite(img, buf, CS, 4 << 20, UQ_WRITE_COMPRESSED) == CS);
	CHECK(uq_flush(img) == 0);
	get(img, &s);
	z = s.v[UQ_STAT_DATA_WRITE_BYTES];
	CHECK(z > 0 && z <= CS - 512);
	EXPECT(img, "compressed write",
	       { "req_write_ops", 1 }, { "req_write_bytes", CS }, { "req_flush_ops", 1 },
	       { "file_read_ops", 1 }, { "file_read_bytes", CS },
	       { "file_write_ops", 4 }, { "file_write_bytes", z + 2 * CS + L1_BYTES },
	       { "file_sync_ops", 3 },
	       { "data_write_ops", 1 }, { "data_write_bytes", z },
	       { "refblock_read_ops", 1 }, { "refblock_read_bytes", CS },
	       { "refblock_write_ops", 1 }, { "refblock_write_bytes", CS },
	       { "l2_write_ops", 1 }, { "l2_write_bytes", CS },
	       { "l1_write_ops", 1 }, { "l1_write_bytes", L1_BYTES },
	       { "l2_writebacks", 1 }, { "refblock_loads", 1 }, { "refblock_writebacks", 1 },
	       { "clusters_allocated", 2 }, { "compressed_writes", 1 }, { "meta_flushes", 1 });
	CHECK(uq_close(img) == 0);
}

/* 512 bytes into a cluster a snapshot shares. The L2 table was dropped
 * from the cache by the snapshot (a miss, one read); it is shared too, so
 * it is copied (new cluster) and so is the data cluster: one read of the
 * old cluster, one write of the merged one. Flush: increases, sync, L2,
 * sync, L1, sync, the decreases of the old L2 table and data cluster (the
 * same block again), sync. */
static void cow_snapshot(const char *path, unsigned bits, enum uq_backend be)
{
	uq_image *img = fresh(path, bits, be, NULL);

	CHECK(uq_pwrite(img, buf, CS, 6 << 20, 0) == CS);
	CHECK(uq_snapshot_create(img, "s") == 0);
	CHECK(uq_flush(img) == 0);
	CHECK(uq_reset_stats(img) == 0);
	CHECK(uq_pwrite(img, buf, 512, 6 << 20, 0) == 512);
	CHECK(uq_flush(img) == 0);
	EXPECT(img, "copy-on-write under a snapshot",
	       { "req_write_ops", 1 }, { "req_write_bytes", 512 }, { "req_flush_ops", 1 },
	       { "file_read_ops", 2 }, { "file_read_bytes", 2 * CS },
	       { "file_write_ops", 5 }, { "file_write_bytes", CS + 3 * CS + L1_BYTES },
	       { "file_sync_ops", 4 },
	       { "data_read_ops", 1 }, { "data_read_bytes", CS },
	       { "data_write_ops", 1 }, { "data_write_bytes", CS },
	       { "l2_read_ops", 1 }, { "l2_read_bytes", CS },
	       { "l2_write_ops", 1 }, { "l2_write_bytes", CS },
	       { "refblock_write_ops", 2 }, { "refblock_write_bytes", 2 * CS },
	       { "l1_write_ops", 1 }, { "l1_write_bytes", L1_BYTES },
	       { "l2_hits", 3 }, { "l2_misses", 1 }, { "l2_writebacks", 1 },
	       { "refblock_writebacks", 2 }, { "clusters_allocated", 2 },
	       { "cow_copies", 1 }, { "meta_flushes", 1 });
	CHECK(uq_close(img) == 0);
}

/* Width 1 can't share a cluster, so snapshots are refused: there the copy
 * comes from a backing file. The overlay allocates a cluster and an L2
 * table as an allocating write does; the copy then reads the old bytes
 * through the overlay's new table (a hit: unallocated there) and the
 * backing's table (a miss: one L2 read in the backing file), then the
 * data. */
static void cow_backing(const char *path, const char *base, unsigned bits,
			enum uq_backend be)
{
	uq_image *img = fresh(base, bits, be, NULL);

	CHECK(uq_pwrite(img, buf, CS, 6 << 20, 0) == CS);
	CHECK(uq_close(img) == 0);
	img = fresh(path, bits, be, base);
	CHECK(uq_pwrite(img, buf, 512, 6 << 20, 0) == 512);
	CHECK(uq_flush(img) == 0);
	EXPECT(img, "copy-on-write from a backing file",
	       { "req_write_ops", 1 }, { "req_write_bytes", 512 }, { "req_flush_ops", 1 },
	       { "file_read_ops", 3 }, { "file_read_bytes", 3 * CS },
	       { "file_write_ops", 4 }, { "file_write_bytes", CS + 2 * CS + L1_BYTES },
	       { "file_sync_ops", 3 },
	       { "data_read_ops", 1 }, { "data_read_bytes", CS },
	       { "data_write_ops", 1 }, { "data_write_bytes", CS },
	       { "l2_read_ops", 1 }, { "l2_read_bytes", CS },
	       { "refblock_read_ops", 1 }, { "refblock_read_bytes", CS },
	       { "refblock_write_ops", 1 }, { "refblock_write_bytes", CS },
	       { "l2_write_ops", 1 }, { "l2_write_bytes", CS },
	       { "l1_write_ops", 1 }, { "l1_write_bytes", L1_BYTES },
	       { "l2_hits", 1 }, { "l2_misses", 1 }, { "l2_writebacks", 1 },
	       { "refblock_loads", 1 },
	       { "refblock_writebacks", 1 }, { "clusters_allocated", 2 },
	       { "cow_copies", 1 }, { "meta_flushes", 1 });
	CHECK(uq_close(img) == 0);
}

int main(void)
{
	static const unsigned widths[] = { 1, 16, 64 };
	static const struct { enum uq_backend be; const char *name; } bes[] = {
		{ UQ_IO_URING, "io_uring" }, { UQ_IO_PSYNC, "psync" },
	};
	char path[] = "/tmp/uqcow-test-stats-XXXXXX", base[] = "/tmp/uqcow-test-stats-XXXXXX";
	char where[64];
	int fd = mkstemp(path), fd2 = mkstemp(base);

	CHECK(fd >= 0 && fd2 >= 0);
	close(fd);
	close(fd2);
	memset(buf, 0xab, sizeof(buf));
	for (size_t b = 0; b < sizeof(bes) / sizeof(bes[0]); b++) {
		for (size_t i = 0; i < sizeof(widths) / sizeof(widths[0]); i++) {
			snprintf(where, sizeof(where), "%s, refcount_bits=%u", bes[b].name,
				 widths[i]);
			test_where = where;
			alloc_write(path, widths[i], bes[b].be);
			discard_table(path, widths[i], bes[b].be);
			discard_table_cold(path, widths[i], bes[b].be);
			discard_entries(path, widths[i], bes[b].be);
			compressed(path, widths[i], bes[b].be);
			if (widths[i] > 1)
				cow_snapshot(path, widths[i], bes[b].be);
			else
				cow_backing(path, base, widths[i], bes[b].be);
		}
	}
	unlink(path);
	unlink(base);
	return 0;
}
