/* SPDX-License-Identifier: MIT */
/* A kernel without OFD locks, simulated for tests (noofd.c). */
#ifndef UQ_NOOFD_H
#define UQ_NOOFD_H

/* From now on, in this process and what it execs, fcntl's F_OFD_*
 * commands fail with EINVAL. 0, or -errno where seccomp isn't available
 * (-ENOTSUP: no filter for this architecture). Irreversible: fork first. */
int noofd_install(void);

#endif
