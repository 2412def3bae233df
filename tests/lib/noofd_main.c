// SPDX-License-Identifier: MIT
/* noofd CMD [ARG...]: run CMD as on a kernel without OFD locks (fcntl's
 * F_OFD_* commands fail with EINVAL). Exit 77 (skip) where that can't be
 * set up. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "noofd.h"

int main(int argc, char **argv)
{
	int ret;

	if (argc < 2) {
		fprintf(stderr, "usage: noofd CMD [ARG...]\n");
		return 2;
	}
	ret = noofd_install();
	if (ret < 0) {
		fprintf(stderr, "noofd: SKIP: can't install the seccomp filter: %s\n",
			strerror(-ret));
		return 77;
	}
	execvp(argv[1], argv + 1);
	fprintf(stderr, "noofd: %s: %s\n", argv[1], strerror(errno));
	return 127;
}
