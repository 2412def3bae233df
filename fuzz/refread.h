/* SPDX-License-Identifier: MIT */
/* A deliberately simple qcow2 reader for differential fuzzing: reads a
 * whole image held in memory, synchronously, with no cache, decoding the
 * header, L1, L2 (standard and extended), compressed clusters and the
 * snapshot table on its own, straight from docs/interop/qcow2.txt. It
 * shares no code with the engine but the compression libraries. */
#ifndef UQ_REFREAD_H
#define UQ_REFREAD_H

#include <stddef.h>
#include <stdint.h>

struct refread;

/* Open the image in data[0..size). snap NULL: the active state; else the
 * snapshot whose ID (or, failing that, name) is snap. Returns 0, or
 * -errno with refread_why() naming the field. The data must outlive the
 * reader. */
int refread_open(const uint8_t *data, size_t size, const char *snap,
		 struct refread **out);
void refread_close(struct refread *r);

uint64_t refread_size(const struct refread *r);

/* Guest bytes [off, off+len) into buf. Returns 0 or -errno (why set). */
int refread_read(struct refread *r, uint8_t *buf, size_t len, uint64_t off);

/* Why the last refusal of this reader happened: the field and reason. */
const char *refread_why(void);

#endif
