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

/* uq_errprefix(path) unless the message starts with "path: " already (a
 * lower layer, such as io_file_open, named the file). */
void uq_errname(const char *path);

void uq_errclear(void);

#endif
