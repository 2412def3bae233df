/* SPDX-License-Identifier: MIT */
/* The one check the test programs share: CHECK(cond) names the file, line,
 * condition and the engine's last message, and fails the program (exit 1). */
#ifndef UQ_TEST_H
#define UQ_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "uqcow.h"

/* What the program is testing right now (a backend, a geometry), for the
 * failure line; "" for nothing. */
static const char *test_where = "";

static inline _Noreturn void test_failed(const char *file, int line, const char *cond)
{
	const char *msg = uq_errmsg();

	fprintf(stderr, "%s:%d:%s%s%s CHECK failed: %s%s%s%s\n", file, line,
		*test_where ? " [" : "", test_where, *test_where ? "]" : "", cond,
		*msg ? " (last engine message: " : "", msg, *msg ? ")" : "");
	exit(1);
}

/* xorshift64: the same sequence on every run, per program. */
static uint64_t test_rng = 0x9e3779b97f4a7c15ull;

static inline uint64_t test_rand(void)
{
	test_rng ^= test_rng << 13;
	test_rng ^= test_rng >> 7;
	test_rng ^= test_rng << 17;
	return test_rng;
}

/* Stops at the first failure: what follows a failed check may depend on it. */
#define CHECK(cond) ((cond) ? (void)0 : test_failed(__FILE__, __LINE__, #cond))

#endif
