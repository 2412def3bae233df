// SPDX-License-Identifier: MIT
/* ENOSPC and EIO at every write and flush of a workload: the operation that
 * meets it fails with a message, the image stays consistent, flushed data stays. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crash.h"

/* A bit of everything on a small image: allocating and partial writes,
 * compressed writes, zeroes, discards, a width change, a resize, and
 * snapshots taken (refused at width 1, before the width change), applied
 * and deleted. */
static void workload(struct run *R)
{
	uint64_t cs = R->c.cs;

	for (int i = 0; i < 28; i++) {
		/* after the resize, the grown part too (a second L2 table) */
		uint64_t r = rnd_below(R, 10), c = rnd_below(R, R->size / cs - 2);
		uint64_t sectors = 1 + rnd_below(R, 2 * cs / SECTOR);

		if (r < 4)
			g_write(R, c * cs + rnd_below(R, cs / SECTOR) * SECTOR, sectors * SECTOR, 0);
		else if (r < 6)
			g_write(R, c * cs, cs, UQ_WRITE_COMPRESSED);
		else if (r == 6)
			g_zero(R, c * cs, 2 * cs, rnd_below(R, 2) ? UQ_ZERO_UNMAP : 0);
		else if (r == 7)
			g_zero(R, c * cs, SECTOR, 0);
		else
			g_discard(R, c * cs, 2 * cs);
		if (i % 8 == 3)
			g_flush(R);
		if (i % 8 == 7)   /* a write waits behind an asynchronous flush */
			g_aflush(R, c * cs, cs, false, (c + 1) * cs, cs);
		if (i == 5)
			g_snapshot(R, 'c', "a");
		if (i == 13)
			g_amend(R, R->c.bits == 16 ? 4 : 16);
		if (i == 15)
			g_snapshot(R, 'c', "b");
		if (i == 20)
			g_resize(R, R->size + 64 * cs);
		if (i == 23 && find_msnap(R, "a"))
			g_snapshot(R, 'd', "a");
		if (i == 25 && find_msnap(R, "b"))
			g_snapshot(R, 'a', "b");
	}
}

struct mode {
	const char *name;
	int err;
	bool sticky;
};

static const struct mode modes[] = {
	{ "EIO, disk gone",     -EIO,    true },
	{ "ENOSPC, disk full",  -ENOSPC, true },
	{ "EIO once",           -EIO,    false },
	{ "ENOSPC once",        -ENOSPC, false },
};

static const struct cfg base = { .cs = 1024, .size = 128 << 10 };
static bool verbose;

/* The changes a clean run makes (the close included). */
static uint64_t count_changes(const struct cfg *c)
{
	struct run R = { 0 };
	uint64_t n = 0;

	if (run_start(&R, "enospc", c) == 0) {
		workload(&R);
		g_flush(&R);
		run_close(&R);
		n = io_fault_changes(R.fl);
	}
	if (R.failures)
		n = 0;
	run_free(&R);
	return n;
}

/* Fail change k, finish the workload, close; then check the file as it
 * stands and as of its last completed flush. */
static unsigned long fail_at(const struct cfg *c, const struct mode *m, uint64_t k, bool qemu,
			     unsigned long *states, unsigned long *qchecks)
{
	struct run R = { .may_fail = true, .verbose = verbose };
	struct io_fault_image st;
	unsigned long failures;
	char label[128];

	if (run_start(&R, "enospc", c) < 0) {
		fail(&R, "setup failed");
		run_free(&R);
		return 1;
	}
	io_fault_fail_at(R.fl, k, m->err, m->sticky);
	workload(&R);
	g_flush(&R);
	run_close(&R);
	if (!io_fault_failures(R.fl))
		fail(&R, "%s at change %llu: the change never came", m->name,
		     (unsigned long long)k);
	if (verbose)
		dump_timeline(&R);
	if (verbose && io_fault_first_failure(R.fl)) {
		const struct io_fault_op *f = io_fault_first_failure(R.fl);

		fprintf(stderr, "  change %llu was a %s of 0x%llx at 0x%llx\n",
			(unsigned long long)k, f->kind == IO_FAULT_WRITE ? "write" :
			f->kind == IO_FAULT_FLUSH ? "flush" : "punch/truncate",
			(unsigned long long)f->len, (unsigned long long)f->off);
	}

	size_t n = io_fault_nops(R.fl), level = R.nsnaps - 1, last_flush = 0;

	for (size_t i = 0; i < n; i++)
		if (io_fault_op(R.fl, i)->kind == IO_FAULT_FLUSH)
			last_flush = i + 1;
	/* everything the file took: the process went on, then exited */
	snprintf(label, sizeof(label), "%s at change %llu, the file as left", m->name,
		 (unsigned long long)k);
	if (io_fault_crash_state(R.fl, n, NULL, 0, &st) == 0) {
		check_image(&R, &st, level, R.snaps[level].ngops, R.ngops, qemu, label);
		io_fault_image_free(&st);
		(*states)++;
	}
	/* a power cut instead: only what the last fsync covered */
	snprintf(label, sizeof(label), "%s at change %llu, as of the last fsync", m->name,
		 (unsigned long long)k);
	if (io_fault_crash_state(R.fl, last_flush, NULL, 0, &st) == 0) {
		check_image(&R, &st, level, R.snaps[level].ngops, R.ngops, false, label);
		io_fault_image_free(&st);
		(*states)++;
	}
	*qchecks += R.qemu_checks;
	failures = R.failures;
	run_free(&R);
	return failures;
}

static void usage(void)
{
	fprintf(stderr, "usage: test_enospc [-s SEED] [-b BITS] [-l 0|1] [-m MODE] [-k CHANGE] "
		"[-v]\n  modes: 0 EIO sticky, 1 ENOSPC sticky, 2 EIO once, 3 ENOSPC once\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const uint32_t widths[] = { 1, 16, 64 };
	unsigned long total_states = 0, total_fail = 0, total_q = 0;
	uint64_t seed = 1, only_k = 0;
	int opt, only_lazy = -1, only_mode = -1;
	uint32_t only_bits = 0;

	while ((opt = getopt(argc, argv, "s:b:l:m:k:v")) != -1) {
		switch (opt) {
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'b': only_bits = (uint32_t)atoi(optarg); break;
		case 'l': only_lazy = atoi(optarg); break;
		case 'm': only_mode = atoi(optarg); break;
		case 'k': only_k = strtoull(optarg, NULL, 0); break;
		case 'v': verbose = true; break;
		default: usage();
		}
	}
	for (size_t b = 0; b < sizeof(widths) / sizeof(widths[0]); b++) {
		if (only_bits && only_bits != widths[b])
			continue;
		for (int lazy = 0; lazy < 2; lazy++) {
			struct cfg c = base;
			uint64_t changes;

			if (only_lazy >= 0 && only_lazy != lazy)
				continue;
			c.bits = widths[b];
			c.lazy = lazy;
			c.seed = seed * 7919 + widths[b] * 31 + (uint64_t)lazy;
			changes = count_changes(&c);
			if (!changes) {
				fprintf(stderr, "bits=%u lazy=%d: the clean run failed\n",
					widths[b], lazy);
				return 1;
			}
			for (int mi = 0; mi < (int)(sizeof(modes) / sizeof(modes[0])); mi++) {
				unsigned long states = 0, fails = 0, q = 0;

				if (only_mode >= 0 && only_mode != mi)
					continue;
				for (uint64_t k = 1; k <= changes; k++)
					if (!only_k || only_k == k)
						fails += fail_at(&c, &modes[mi], k, k % 23 == 0,
								 &states, &q);
				printf("enospc bits=%-2u lazy=%d %-18s: failed each of %llu changes, "
				       "%lu states checked, %lu qemu-img checks%s\n", widths[b], lazy,
				       modes[mi].name, (unsigned long long)changes, states, q,
				       fails ? " FAILED" : "");
				fflush(stdout);
				total_states += states;
				total_fail += fails;
				total_q += q;
			}
		}
	}
	printf("enospc all: %lu states, %lu qemu-img checks, %lu failures\n", total_states,
	       total_q, total_fail);
	return total_fail ? 1 : 0;
}
