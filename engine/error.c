// SPDX-License-Identifier: MIT
/* Per-thread error message buffer behind uq_errmsg(). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "uqcow.h"

static _Thread_local char errbuf[1024];

int uq_seterr(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	return err;
}

void uq_errprefix(const char *prefix)
{
	char tmp[sizeof(errbuf)];

	/* copy first: errbuf is both source and destination */
	memcpy(tmp, errbuf, sizeof(tmp));
	/* truncation of an overlong message is intended */
	size_t n = strlen(prefix);

	if (n > sizeof(errbuf) - 3)
		n = sizeof(errbuf) - 3;
	memcpy(errbuf, prefix, n);
	memcpy(errbuf + n, ": ", 2);
	memcpy(errbuf + n + 2, tmp, sizeof(errbuf) - n - 3);
	errbuf[sizeof(errbuf) - 1] = '\0';
}

void uq_errclear(void)
{
	errbuf[0] = '\0';
}

const char *uq_errmsg(void)
{
	return errbuf;
}
