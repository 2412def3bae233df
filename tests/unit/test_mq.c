// SPDX-License-Identifier: MIT
/* Multi-queue test: several threads, each with its own queue on one image,
 * read random ranges through a small shared L2 cache and check every byte.
 * Built and run under ThreadSanitizer in CI. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "uqcow.h"

#define SIZE (32u << 20)
#define CS 4096u                     /* small clusters: many L2 tables */
#define THREADS 3
#define DEPTH 8

static uint8_t *mirror;
static uq_image *img;

struct slotbuf {
	uint8_t buf[3 * CS];
	uint64_t off;
	size_t len;
	int busy;
};

static void done(void *arg, ssize_t res)
{
	struct slotbuf *s = arg;

	CHECK(res == (ssize_t)s->len);
	CHECK(memcmp(s->buf, mirror + s->off, s->len) == 0);
	s->busy = 0;
}

static void *reader(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 7;
	struct slotbuf *slots = calloc(DEPTH, sizeof(*slots));
	uq_queue *q;
	int issued = 0;

	CHECK(slots);
	CHECK(uq_queue_create(img, 32, &q) == 0);
	while (issued < 3000) {
		for (int i = 0; i < DEPTH && issued < 3000; i++) {
			if (slots[i].busy)
				continue;
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			slots[i].len = 1 + (size_t)(seed % (3 * CS));
			slots[i].off = (seed >> 24) % (SIZE - slots[i].len);
			slots[i].busy = 1;
			CHECK(uq_queue_read(q, slots[i].buf, slots[i].len, slots[i].off,
					    done, &slots[i]) == 0);
			issued++;
		}
		CHECK(uq_queue_poll(q, 1) >= 0);
	}
	for (int i = 0; i < DEPTH; i++)
		while (slots[i].busy)
			CHECK(uq_queue_poll(q, 1) >= 0);
	uq_queue_destroy(q);
	free(slots);
	return NULL;
}

int main(void)
{
	char path[] = "/tmp/uq_test_mqXXXXXX";
	int fd = mkstemp(path);
	struct uq_create_opts co = { .struct_size = sizeof(co), .size = SIZE,
				     .cluster_size = CS, .refcount_bits = 16 };
	struct uq_open_opts o = { .struct_size = sizeof(o), .flags = UQ_OPEN_RDWR };
	pthread_t t[THREADS];
	uint8_t *buf = malloc(CS);

	CHECK(fd >= 0 && buf);
	close(fd);
	mirror = calloc(1, SIZE);
	CHECK(uq_create(path, &co) == 0);
	CHECK(uq_open(path, &o, &img) == 0);
	/* data, zeros and compressed clusters scattered over the image */
	for (uint64_t c = 0; c < SIZE / CS; c++) {
		uint64_t off = c * CS;

		switch ((c * 2654435761u) % 5) {
		case 0:
			break;
		case 1:
		case 2:
			for (unsigned i = 0; i < CS; i++)
				buf[i] = (uint8_t)(c * 31 + i);
			CHECK(uq_pwrite(img, buf, CS, off, 0) == CS);
			memcpy(mirror + off, buf, CS);
			break;
		case 3:
			memset(buf, (int)(c & 0xff), CS);
			CHECK(uq_pwrite(img, buf, CS, off, UQ_WRITE_COMPRESSED) == CS);
			memcpy(mirror + off, buf, CS);
			break;
		default:
			CHECK(uq_write_zeroes(img, off, CS, 0) == 0);
		}
	}
	CHECK(uq_close(img) == 0);
	/* reopen read-only with a cache of 16 tables for ~16k clusters */
	o.flags = 0;
	o.l2_cache_size = 16 * CS;
	CHECK(uq_open(path, &o, &img) == 0);
	for (uintptr_t i = 0; i < THREADS; i++)
		CHECK(pthread_create(&t[i], NULL, reader, (void *)(i + 1)) == 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	CHECK(uq_close(img) == 0);
	unlink(path);
	free(mirror);
	free(buf);
	printf("test_mq: ok (%d threads x 3000 reads, every byte checked)\n", THREADS);
	return 0;
}
