/* SPDX-License-Identifier: MIT */
/* Image creation options (-o k=v,...) as qemu-img takes them: parsing,
 * `-o help`, the "Formatting ..." line, and the mapping to uq_create. */
#ifndef UQ_IMGOPTS_H
#define UQ_IMGOPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "uqcow.h"

/* The keys, in the order qemu-img 7.2 prints them on its Formatting line. */
enum imgopt_key {
	IMGOPT_CLUSTER_SIZE,
	IMGOPT_EXTENDED_L2,
	IMGOPT_PREALLOCATION,
	IMGOPT_COMPRESSION_TYPE,
	IMGOPT_SIZE,
	IMGOPT_COMPAT,
	IMGOPT_BACKING_FILE,
	IMGOPT_BACKING_FMT,
	IMGOPT_DATA_FILE,
	IMGOPT_DATA_FILE_RAW,
	IMGOPT_LAZY_REFCOUNTS,
	IMGOPT_REFCOUNT_BITS,
	IMGOPT_NKEYS,
};

/* Options given so far for one output format ("qcow2" or "raw"). Values
 * are kept as given (strings) until imgopts_to_create() reads them. */
struct imgopts {
	const char *format;
	char *val[IMGOPT_NKEYS];   /* NULL: not given; owned */
	uint64_t num[IMGOPT_NKEYS];/* parsed sizes and numbers */
	bool help;                 /* "help" or "?" was among the options */
};

void imgopts_init(struct imgopts *o, const char *format);
void imgopts_free(struct imgopts *o);

/* Add one -o argument: "k=v,k=v" with ",," for a literal comma. Unknown
 * keys, keys the format doesn't take and malformed sizes, numbers and
 * booleans are refused with an error line naming them (-EINVAL).
 * `what` names the file for the message. */
int imgopts_parse(struct imgopts *o, const char *arg, const char *what);

/* Set a key as if given with -o (e.g. the size operand, -b, -F). */
int imgopts_set(struct imgopts *o, enum imgopt_key k, const char *val,
		const char *what);
void imgopts_set_size(struct imgopts *o, uint64_t size);

bool imgopts_has(const struct imgopts *o, enum imgopt_key k);
const char *imgopts_key_name(enum imgopt_key k);

/* "Supported qcow2 options:" and one line per key, as qemu-img prints. */
void imgopts_help(const char *format, const char *intro);

/* "Formatting 'FILE', fmt=qcow2 cluster_size=65536 ..." */
void imgopts_print(const struct imgopts *o, const char *path);

/* Fill c (already initialised) from the options; enumerated values are
 * checked here (-EINVAL after an error line). */
int imgopts_to_create(const struct imgopts *o, struct uq_create_opts *c,
		      const char *what);

/* The value of a boolean option given as on/off/yes/no/true/false. */
int imgopts_bool(const char *val, bool *out);

#endif
