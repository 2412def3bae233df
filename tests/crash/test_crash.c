// SPDX-License-Identifier: MIT
/* Crash consistency: seeded workloads at every refcount width, with and
 * without lazy refcounts; every persistence point and torn states between. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crash.h"

static const uint32_t widths[] = { 1, 2, 4, 8, 16, 32, 64 };
#define NWIDTHS (sizeof(widths) / sizeof(widths[0]))

/* A random sector-aligned range of 1..max sectors inside the image. */
static uint64_t pick(struct run *R, uint64_t max, uint64_t *len)
{
	uint64_t ns = R->size / SECTOR, l = 1 + rnd_below(R, max);

	if (l > ns)
		l = ns;
	*len = l * SECTOR;
	return rnd_below(R, ns - l + 1) * SECTOR;
}

/* A random range of 1..max whole clusters. */
static uint64_t pick_clusters(struct run *R, uint64_t max, uint64_t *len)
{
	uint64_t cs = R->c.cs, nc = R->size / cs, l = 1 + rnd_below(R, max);

	if (l > nc)
		l = nc;
	*len = l * cs;
	return rnd_below(R, nc - l + 1) * cs;
}

static uint64_t spc(const struct run *R)
{
	return R->c.cs / SECTOR;   /* sectors per cluster */
}

/* Allocating writes of every shape, some rewriting what is there. */
static void wl_alloc(struct run *R)
{
	uint64_t off, len;

	for (int i = 0; i < 48; i++) {
		off = pick(R, 4 * spc(R), &len);
		g_write(R, off, len, 0);
		if (i % 6 == 5)
			g_flush(R);
	}
}

/* Partial writes over a backing file copy the rest of the cluster up;
 * discards and zeroes must hide the backing data. */
static void wl_cow(struct run *R)
{
	uint64_t off, len;

	for (int i = 0; i < 40; i++) {
		uint64_t r = rnd_below(R, 10);

		if (r < 5) {
			off = pick(R, 1, &len);
			g_write(R, off, len, 0);
		} else if (r < 7) {
			off = pick(R, 3 * spc(R), &len);
			g_write(R, off, len, 0);
		} else if (r == 7) {
			off = pick_clusters(R, 2, &len);
			g_discard(R, off, len);
		} else if (r == 8) {
			off = pick(R, spc(R) - 1, &len);
			g_zero(R, off, len, 0);
		} else {
			off = pick_clusters(R, 2, &len);
			g_zero(R, off, len, rnd_below(R, 2) ? UQ_ZERO_UNMAP : 0);
		}
		if (i % 6 == 5)
			g_flush(R);
	}
}

/* Write-zeroes over allocated data, with and without unmap, whole and
 * partial clusters, and writes into zeroed clusters that kept their host. */
static void wl_zero(struct run *R)
{
	uint64_t off, len;

	for (int i = 0; i < 12; i++) {
		off = pick(R, 8 * spc(R), &len);
		g_write(R, off, len, 0);
	}
	g_flush(R);
	for (int i = 0; i < 32; i++) {
		uint64_t r = rnd_below(R, 8);

		if (r < 3) {
			off = pick_clusters(R, 4, &len);
			g_zero(R, off, len, r == 0 ? UQ_ZERO_UNMAP : 0);
		} else if (r == 3) {
			off = pick(R, 2 * spc(R), &len);
			g_zero(R, off, len, UQ_ZERO_UNMAP);
		} else {
			off = pick(R, 2 * spc(R), &len);
			g_write(R, off, len, 0);
		}
		if (i % 5 == 4)
			g_flush(R);
	}
}

/* Discards free clusters (refcounts drop after the L2 change is on disk)
 * and later writes reuse them. */
static void wl_discard(struct run *R)
{
	uint64_t off, len;

	for (int i = 0; i < 44; i++) {
		uint64_t r = rnd_below(R, 20);

		if (r < 10) {
			off = pick(R, 3 * spc(R), &len);
			g_write(R, off, len, 0);
		} else if (r < 19) {
			off = pick_clusters(R, 8, &len);
			g_discard(R, off, len);
		} else {
			off = pick(R, spc(R), &len);
			g_discard(R, off, len);   /* partial: ignored */
		}
		if (i % 5 == 4)
			g_flush(R);
	}
}

/* Compressed clusters packed into shared host clusters, overwritten by
 * plain writes, discarded and zeroed. */
static void wl_compress(struct run *R)
{
	uint64_t off, len;

	for (int i = 0; i < 36; i++) {
		uint64_t r = rnd_below(R, 20);

		if (r < 10) {
			off = pick_clusters(R, 2, &len);
			g_write(R, off, len, UQ_WRITE_COMPRESSED);
		} else if (r < 14) {
			off = pick(R, spc(R), &len);
			g_write(R, off, len, 0);
		} else if (r < 17) {
			off = pick_clusters(R, 2, &len);
			g_discard(R, off, len);
		} else {
			off = pick_clusters(R, 2, &len);
			g_zero(R, off, len, r == 19 ? UQ_ZERO_UNMAP : 0);
		}
		if (i % 5 == 4)
			g_flush(R);
	}
}

/* Host bytes one cluster of refcount table describes. */
static uint64_t reftable_cover(const struct run *R)
{
	uint64_t cs = R->c.cs;

	return (cs / 8) * (cs * 8 / R->c.bits) * cs;
}

/* Does the rcgrow workload write past what the refcount table covers?
 * Where the width makes that affordable: at 512-byte clusters one table
 * cluster describes 128 MiB / refcount_bits of host file, so at 16 bits
 * and more within the 9 MiB guest. */
static bool rcgrow_must_grow(const struct run *R)
{
	return reftable_cover(R) + (256 << 10) <= R->size;
}

/* Large writes until the refcount table must grow (rcgrow_must_grow);
 * elsewhere 1 MiB of them. */
static void wl_rcgrow(struct run *R)
{
	uint64_t cover = reftable_cover(R), target, chunk = 512 << 10, off = 0;

	target = rcgrow_must_grow(R) ? cover + (256 << 10) : 1 << 20;
	for (int i = 0; off < target; i++) {
		uint64_t len = target - off < chunk ? target - off : chunk;

		g_write(R, off, len, 0);
		off += len;
		if (i % 4 == 3)
			g_flush(R);
	}
	/* and some scattered ones, allocated in the grown range */
	for (int i = 0; i < 8; i++) {
		uint64_t len, o = pick(R, 2 * spc(R), &len);

		g_write(R, o, len, 0);
	}
}

/* Sparse writes over a large guest: nearly each needs a new L2 table. */
static void wl_l2(struct run *R)
{
	uint64_t off, len;

	for (int i = 0; i < 48; i++) {
		off = pick(R, 2, &len);
		g_write(R, off, len, 0);
		if (i % 6 == 5)
			g_flush(R);
	}
}

static size_t width_index(uint32_t bits)
{
	for (size_t i = 0; i < NWIDTHS; i++)
		if (widths[i] == bits)
			return i;
	return 0;
}

/* Refcount width changes between batches of writes and discards, two of
 * them back to back (the structures of the first are freed before any data
 * was written past them), then single sectors into fresh clusters. */
static void wl_amend(struct run *R)
{
	size_t wi = width_index(R->c.bits);
	uint32_t seq[4] = { widths[(wi + 3) % NWIDTHS], widths[(wi + 5) % NWIDTHS],
			    widths[(wi + 1) % NWIDTHS], R->c.bits };
	uint64_t off, len;

	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 8; i++) {
			if (round == 2) {
				off = pick(R, 1, &len);
				g_write(R, off, len, 0);
			} else if (rnd_below(R, 4)) {
				off = pick(R, 3 * spc(R), &len);
				g_write(R, off, len, 0);
			} else {
				off = pick_clusters(R, 4, &len);
				g_discard(R, off, len);
			}
			if (i == 4)
				g_flush(R);
		}
		g_flush(R);
		if (round == 0)
			g_amend(R, seq[0]);
		if (round == 1) {
			g_amend(R, seq[1]);
			g_amend(R, seq[2]);
		}
	}
	g_amend(R, seq[3]);
	for (int i = 0; i < 4; i++) {
		off = pick(R, 1, &len);
		g_write(R, off, len, 0);
	}
}

/* Rewrites in place: after the first flush no metadata changes, so only
 * the flush's fsync makes the rewrites durable. */
static void wl_inplace(struct run *R)
{
	uint64_t cs = R->c.cs, nc = R->size / cs;

	g_write(R, 0, R->size, 0);
	g_flush(R);
	for (int i = 0; i < 24; i++) {
		uint64_t c = rnd_below(R, nc), s = rnd_below(R, cs / SECTOR);

		g_write(R, c * cs + s * SECTOR, SECTOR, 0);
		if (i % 3 == 2)
			g_flush(R);
	}
}

/* Growth (the L1 table moves, in place first, then to two clusters),
 * writes in the new space, and a shrink of a discarded tail. */
static void wl_resize(struct run *R)
{
	uint64_t off, len;
	static const uint64_t sizes[] = { 1 << 20, 3 << 20, 2 << 20, 5 << 19 };

	for (int step = 0; step < 4; step++) {
		for (int i = 0; i < 8; i++) {
			off = pick(R, 2 * spc(R), &len);
			g_write(R, off, len, 0);
			if (i == 3)
				g_flush(R);
		}
		/* writes near the end, where the guest grew */
		off = R->size - 4 * R->c.cs;
		g_write(R, off, 2 * R->c.cs, 0);
		g_flush(R);
		if (sizes[step] < R->size)
			g_discard(R, sizes[step], R->size - sizes[step]);
		g_resize(R, sizes[step]);
	}
	off = pick(R, 2 * spc(R), &len);
	g_write(R, off, len, 0);
}

/* The i-th live snapshot of the model. */
static struct msnap *nth_live(struct run *R, uint64_t i)
{
	for (size_t k = 0; k < R->nms; k++)
		if (msnap_live(&R->ms[k]) && !i--)
			return &R->ms[k];
	return NULL;
}

static uint64_t live_snapshots(const struct run *R)
{
	uint64_t n = 0;

	for (size_t k = 0; k < R->nms; k++)
		n += msnap_live(&R->ms[k]);
	return n;
}

/* Internal snapshots taken, applied and deleted between allocating,
 * compressed and partial writes, discards, zeroes and a growth, so that
 * each crash window of the three (increments, COPIED flags, the table or
 * L1 switch, the frees) is crossed with shared clusters of every kind. At
 * width 1 a create must be refused without a write; at width 2 a third
 * reference to a cluster must be refused, and that changes nothing. */
static void wl_snapshot(struct run *R)
{
	uint64_t off, len;
	char name[16];
	int taken = 0;

	for (int i = 0; i < 44; i++) {
		uint64_t r = rnd_below(R, 24), live = live_snapshots(R);
		struct msnap *m;

		if (r < 7) {
			off = pick(R, 3 * spc(R), &len);
			g_write(R, off, len, 0);
		} else if (r < 9) {
			off = pick_clusters(R, 2, &len);
			g_write(R, off, len, UQ_WRITE_COMPRESSED);
		} else if (r < 11) {
			off = pick_clusters(R, 4, &len);
			g_discard(R, off, len);
		} else if (r == 11) {
			off = pick_clusters(R, 2, &len);
			g_zero(R, off, len, rnd_below(R, 2) ? UQ_ZERO_UNMAP : 0);
		} else if (r < 16 && live < 4) {
			snprintf(name, sizeof(name), "s%d", ++taken);
			g_snapshot(R, 'c', name);
		} else if (r < 19 && live) {
			m = nth_live(R, rnd_below(R, live));
			snprintf(name, sizeof(name), "%s", m->name);
			g_snapshot(R, 'a', name);
		} else if (r < 22 && live) {
			m = nth_live(R, rnd_below(R, live));
			snprintf(name, sizeof(name), "%s", m->name);
			g_snapshot(R, 'd', name);
		} else if (r == 23 && R->size < 2 * R->c.size) {
			/* later snapshots have another size; applying goes back */
			g_resize(R, R->size + 16 * R->c.cs);
		}
		if (i % 5 == 4)
			g_flush(R);
	}
}

/* Writes, zeroes and discards under an enabled bitmap, which the close
 * writes back: each crash state has it in use or exactly right. */
static void wl_bitmap(struct run *R)
{
	uint64_t off, len;

	for (int i = 0; i < 24; i++) {
		uint64_t r = rnd_below(R, 6);

		off = pick(R, 3 * spc(R), &len);
		if (r == 0)
			g_zero(R, off, len, UQ_ZERO_UNMAP);
		else if (r == 1)
			g_discard(R, off & ~(R->c.cs - 1), R->c.cs);
		else
			g_write(R, off, len, 0);
		if (i % 6 == 5)
			g_flush(R);
	}
}

struct workload {
	const char *name;
	uint32_t cs;
	uint64_t size;
	int backing;
	unsigned samples;   /* reordered/torn states per interval */
	void (*fn)(struct run *R);
	uint64_t rc_cache;  /* refcount_cache_size (1: the 2-block minimum) */
	uint32_t bitmap_gran;  /* an enabled bitmap of this granularity (0: none) */
	uint64_t l2_cache;  /* l2_cache_size (0: the engine's default) */
	unsigned open_flags;  /* UQ_OPEN_* for the run's image */
};

/* Refcount blocks dropped from a 2-block cache, dirty ones written back
 * mid-request: 5 MiB of 512-byte clusters needs 3 blocks at 1 bit and 160
 * at 64, so allocation, frees and reuse all run through evictions. */
static void wl_evict(struct run *R)
{
	uint64_t chunk = 512 << 10, end = 5 << 20, off, len;

	for (off = 0; off < end; off += chunk) {
		g_write(R, off, chunk, 0);
		if (off / chunk % 4 == 3)
			g_flush(R);
	}
	for (int i = 0; i < 16; i++) {
		off = pick_clusters(R, 16, &len);
		if (i % 3 == 2)
			g_write(R, off, len, 0);
		else
			g_discard(R, off, len);
		if (i % 4 == 3)
			g_flush(R);
	}
}

/* Deferred frees under a two-table L2 cache (the minimum): dirty tables
 * are written back to make room with no sync and nothing freed; discards
 * of whole tables drop them from L1 (shared ones too, once a snapshot
 * shares them); everything freed is merged into runs at the flush. With
 * 512-byte clusters a table maps 64 clusters, 32 KiB. */
static void wl_batch(struct run *R)
{
	uint64_t span = (R->c.cs / 8) * R->c.cs, off, len;
	int snaps = 0;

	for (int i = 0; i < 40; i++) {
		uint64_t r = rnd_below(R, 16);

		if (r < 6) {
			off = pick(R, 3 * spc(R), &len);
			g_write(R, off, len, 0);
		} else if (r < 9) {
			off = pick_clusters(R, 4, &len);
			g_discard(R, off, len);
		} else if (r < 12) {
			off = rnd_below(R, R->size / span) * span;
			len = (1 + rnd_below(R, 2)) * span;
			g_discard(R, off, off + len > R->size ? R->size - off : len);
		} else if (r == 12 && snaps < 2) {
			char name[8];

			snprintf(name, sizeof(name), "s%d", ++snaps);
			g_snapshot(R, 'c', name);   /* refused at 1 bit: no change */
		} else {
			off = rnd_below(R, R->size / span) * span;
			g_write(R, off, span, 0);   /* a whole table's worth */
		}
		if (i % 10 == 9)
			g_flush(R);
	}
}

/* discard-no-unref: discards and unmapping zeroes keep the clusters,
 * marked zero, and punch their bytes before the entry is written; later
 * writes go back into them in place. A snapshot makes some shared, and
 * those are released as usual. */
static void wl_nounref(struct run *R)
{
	uint64_t off, len, woff = 0, wlen = 0, cs = R->c.cs;
	bool snapped = false;

	for (int i = 0; i < 44; i++) {
		uint64_t r = rnd_below(R, 20);

		if (r < 8) {
			woff = pick(R, 3 * spc(R), &wlen);
			g_write(R, woff, wlen, 0);
		} else if (r < 12 && wlen) {
			/* the clusters just written: kept, not freed */
			off = woff & ~(cs - 1);
			g_discard(R, off, (woff + wlen + cs - 1) / cs * cs - off);
		} else if (r < 15) {
			off = pick_clusters(R, 8, &len);
			g_discard(R, off, len);
		} else if (r < 19) {
			off = wlen && r < 17 ? woff : pick(R, 3 * spc(R), &len);
			g_zero(R, off, wlen && r < 17 ? wlen : len, UQ_ZERO_UNMAP);
		} else if (i > 22 && !snapped) {
			snapped = true;
			g_snapshot(R, 'c', "s1");   /* refused at 1 bit: no change */
		}
		if (i % 5 == 4)
			g_flush(R);
	}
}

/* Asynchronous flushes with a request waiting behind each: a write or a
 * discard goes out, then uq_aio_flush, then a write submitted while the
 * flush is in flight (often into clusters the discard frees, which the
 * flush punches first). Crash points fall inside every step of the
 * flush's chain. */
static void wl_aflush(struct run *R)
{
	uint64_t off, len, off2, len2;

	for (int i = 0; i < 36; i++) {
		uint64_t r = rnd_below(R, 10);

		if (r < 3) {
			off = pick(R, 3 * spc(R), &len);
			g_write(R, off, len, 0);
		} else if (r < 4) {
			off = pick_clusters(R, 4, &len);
			g_discard(R, off, len);
		} else {
			bool disc = r < 8;

			off = disc ? pick_clusters(R, 4, &len) : pick(R, 3 * spc(R), &len);
			do
				off2 = pick(R, 3 * spc(R), &len2);
			while (off2 < off + len && off < off2 + len2);
			g_aflush(R, off, len, disc, off2, len2);
		}
	}
}

static const struct workload workloads[] = {
	{ "alloc",    512,  256 << 10, 0, 8, wl_alloc, 0, 0, 0, 0 },
	{ "inplace",  1024, 32 << 10,  0, 8, wl_inplace, 0, 0, 0, 0 },
	{ "cow",      1024, 256 << 10, 1, 8, wl_cow, 0, 0, 0, 0 },
	{ "zero",     512,  128 << 10, 0, 8, wl_zero, 0, 0, 0, 0 },
	{ "discard",  512,  128 << 10, 0, 8, wl_discard, 0, 0, 0, 0 },
	{ "compress", 4096, 256 << 10, 0, 8, wl_compress, 0, 0, 0, 0 },
	{ "rcgrow",   512,  9 << 20,   0, 3, wl_rcgrow, 0, 0, 0, 0 },
	{ "l2",       512,  2 << 20,   0, 8, wl_l2, 0, 0, 0, 0 },
	{ "amend",    1024, 128 << 10, 0, 8, wl_amend, 0, 0, 0, 0 },
	{ "resize",   512,  48 << 10,  0, 8, wl_resize, 0, 0, 0, 0 },
	{ "snapshot", 512,  64 << 10,  0, 8, wl_snapshot, 0, 0, 0, 0 },
	{ "evict",    512,  6 << 20,   0, 1, wl_evict, 1, 0, 0, 0 },
	{ "bitmap",   512,  64 << 10,  0, 8, wl_bitmap, 0, 1024, 0, 0 },
	{ "batch",    512,  256 << 10, 0, 8, wl_batch, 0, 0, 1024, 0 },
	{ "nounref",  512,  128 << 10, 0, 8, wl_nounref, 0, 0, 0, UQ_OPEN_DISCARD_NO_UNREF },
	{ "aflush",   512,  128 << 10, 0, 8, wl_aflush, 0, 0, 0, 0 },
};
#define NWORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

struct totals {
	unsigned long states, failures, qemu;
};

static int run_one(const struct workload *w, size_t wi, uint32_t bits, int lazy, uint64_t seed,
		   int samples, bool verbose, struct totals *t)
{
	struct cfg c = { .cs = w->cs, .bits = bits, .lazy = lazy, .backing = w->backing,
			 .size = w->size, .rc_cache = w->rc_cache,
			 .bitmap_gran = w->bitmap_gran, .l2_cache = w->l2_cache,
			 .open_flags = w->open_flags };
	struct run R = { .verbose = verbose, .qemu_budget = 5 };
	unsigned long states = 0;
	uint64_t batches = 0, dropped = 0, punches = 0;
	char snaps[80] = "";
	int ret;

	c.seed = seed * 1000003 + wi * 8191 + bits * 131 + (uint64_t)lazy * 7;
	R.samples_per_interval = samples >= 0 ? (unsigned)samples : w->samples;
	ret = run_start(&R, w->name, &c);
	if (ret == 0) {
		struct uq_stats st = { .struct_size = sizeof(st) };

		w->fn(&R);
		g_flush(&R);
		if (uq_get_stats(R.img, &st) == 0) {
			R.evictions = st.v[UQ_STAT_REFBLOCK_EVICTIONS];
			batches = st.v[UQ_STAT_L2_BATCH_WRITEBACKS];
			dropped = st.v[UQ_STAT_L2_TABLES_FREED];
			punches = st.v[UQ_STAT_FILE_PUNCH_OPS];
		}
		run_close(&R);
		/* the workload is there to make it grow: a run that didn't
		 * tested nothing it was meant to */
		if (w->fn == wl_rcgrow && rcgrow_must_grow(&R) && !R.reftable_grew)
			fail(&R, "the refcount table did not grow, though the workload "
			     "wrote past what it covered");
		if (w->fn == wl_batch && (!batches || !dropped))
			fail(&R, "%llu L2 writebacks to make room, %llu tables dropped: the "
			     "workload tested nothing it was meant to",
			     (unsigned long long)batches, (unsigned long long)dropped);
		if ((w->open_flags & UQ_OPEN_DISCARD_NO_UNREF) && !punches)
			fail(&R, "no kept cluster was punched: the workload tested nothing "
			     "it was meant to");
		if (w->rc_cache && R.evictions == 0)
			fail(&R, "no refcount block was evicted: the workload tested "
			     "nothing it was meant to");
		states = check_crash_states(&R);
	} else {
		fail(&R, "could not set up the run (%d)", ret);
	}
	if (R.nms)
		snprintf(snaps, sizeof(snaps), ", %zu snapshots taken, %lu snapshot reads",
			 R.nms, R.snap_checks);
	if (w->rc_cache)
		snprintf(snaps, sizeof(snaps), ", %llu refcount blocks evicted",
			 (unsigned long long)R.evictions);
	if (w->fn == wl_batch)
		snprintf(snaps, sizeof(snaps), ", %llu L2 batch writebacks, %llu tables dropped",
			 (unsigned long long)batches, (unsigned long long)dropped);
	if (w->bitmap_gran)
		snprintf(snaps, sizeof(snaps), ", bitmap in use in %lu states, exact in %lu",
			 R.bm_in_use, R.bm_exact);
	printf("crash %-8s -s %-3llu bits=%-2u lazy=%d: %5lu crash states (%lu persistence "
	       "points, %lu reordered/torn), %lu uqcow checks, %lu qemu-img checks, %zu ops "
	       "recorded%s%s%s\n", w->name, (unsigned long long)seed, bits, lazy, states,
	       R.points, R.samples, R.uq_checks, R.qemu_checks, R.fl ? io_fault_nops(R.fl) : 0,
	       snaps,
	       w->fn != wl_rcgrow ? "" : R.reftable_grew ? ", refcount table grew" :
	       rcgrow_must_grow(&R) ? ", refcount table did not grow" :
				      ", refcount table did not grow (not at this width)",
	       R.failures ? " FAILED" : "");
	fflush(stdout);
	t->states += states;
	t->failures += R.failures;
	t->qemu += R.qemu_checks;
	run_free(&R);
	return R.failures ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: test_crash [-b BITS] [-l 0|1] [-s SEED] [-r ROUNDS] [-n SAMPLES] "
		"[-v] WORKLOAD|all\n  -r runs seeds SEED .. SEED+ROUNDS-1\nworkloads:");
	for (size_t i = 0; i < NWORKLOADS; i++)
		fprintf(stderr, " %s", workloads[i].name);
	fprintf(stderr, "\n  -v explains each failure (record ops, where a bad sector lives)\n"
		"  UQ_CRASH_TRACE=1 logs guest operations for crash_replay\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int opt, lazy_only = -1, samples = -1, rounds = 1;
	uint32_t bits_only = 0;
	uint64_t seed = 1;
	bool verbose = false;
	struct totals t = { 0 };
	int bad = 0, matched = 0;

	while ((opt = getopt(argc, argv, "b:l:s:n:r:v")) != -1) {
		switch (opt) {
		case 'r': rounds = atoi(optarg); break;
		case 'b': bits_only = (uint32_t)atoi(optarg); break;
		case 'l': lazy_only = atoi(optarg); break;
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'n': samples = atoi(optarg); break;
		case 'v': verbose = true; break;
		default: usage();
		}
	}
	if (optind != argc - 1)
		usage();
	for (size_t wi = 0; wi < NWORKLOADS; wi++) {
		const struct workload *w = &workloads[wi];
		struct totals wt = { 0 };

		if (strcmp(argv[optind], "all") && strcmp(argv[optind], w->name))
			continue;
		matched++;
		for (size_t b = 0; b < NWIDTHS; b++) {
			if (bits_only && widths[b] != bits_only)
				continue;
			/* evictions: the narrowest, the default and the widest */
			if (w->rc_cache && widths[b] != 1 && widths[b] != 16 && widths[b] != 64)
				continue;
			for (int lazy = 0; lazy < 2; lazy++)
				for (int r = 0; r < rounds; r++)
					if (lazy_only < 0 || lazy_only == lazy)
						bad |= run_one(w, wi, widths[b], lazy,
							       seed + (uint64_t)r, samples,
							       verbose, &wt);
		}
		printf("crash %-8s total: %lu crash states, %lu qemu-img checks, %lu failures\n",
		       w->name, wt.states, wt.qemu, wt.failures);
		t.states += wt.states;
		t.failures += wt.failures;
		t.qemu += wt.qemu;
	}
	if (!matched)
		usage();
	if (matched > 1)
		printf("crash all: %lu crash states, %lu qemu-img checks, %lu failures\n",
		       t.states, t.qemu, t.failures);
	return bad ? 1 : 0;
}
