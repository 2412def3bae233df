// SPDX-License-Identifier: MIT
/* Choosing a backend for a new queue. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

static bool fallback_ok(int err)
{
	return err == -ENOSYS || err == -EPERM || err == -ENOMEM || err == -EACCES ||
	       err == -EOPNOTSUPP;
}

int io_queue_create(const char *force, unsigned depth, struct io_queue **q)
{
	int ret;

	*q = NULL;
	if (!force) {
		/* Lets tests and users pick a backend without a rebuild. */
		const char *env = getenv("UQCOW_IO");

		if (env && *env && strcmp(env, "auto") != 0)
			force = env;
	}
	if (!force) {
		ret = io_uring_backend.queue_init(q, depth);
		if (ret < 0 && fallback_ok(ret))
			ret = io_psync_backend.queue_init(q, depth);
		return ret;
	}
	if (strcmp(force, io_uring_backend.name) == 0)
		return io_uring_backend.queue_init(q, depth);
	if (strcmp(force, io_psync_backend.name) == 0)
		return io_psync_backend.queue_init(q, depth);
	return -EINVAL;
}
