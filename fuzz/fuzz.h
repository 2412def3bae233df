/* SPDX-License-Identifier: MIT */
/* Shared by the fuzz targets: the libFuzzer entry points and FUZZ_CHECK,
 * which turns a broken invariant into an abort the fuzzer records. */
#ifndef UQ_FUZZ_H
#define UQ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
			       unsigned int seed);

/* An invariant the engine promises; failing it is a bug, not bad input. */
#define FUZZ_CHECK(cond)                                                    \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "%s:%d: invariant failed: %s\n",    \
				__FILE__, __LINE__, #cond);                 \
			abort();                                            \
		}                                                           \
	} while (0)

#endif
