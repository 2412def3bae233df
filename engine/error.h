/* SPDX-License-Identifier: MIT */
/* Per-thread error message: decoders and the image layer record why a call
 * failed; uq_errmsg() hands it to the caller. */
#ifndef UQ_ERROR_H
#define UQ_ERROR_H

/* Record a message and return err (a negative errno), so callers can write
 * `return uq_seterr(-EINVAL, "l1_size %u too large", n);`. */
int uq_seterr(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Prefix the current message with "prefix: " (e.g. the file name). */
void uq_errprefix(const char *prefix);

void uq_errclear(void);

#endif
