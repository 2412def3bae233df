// SPDX-License-Identifier: MIT
/* Per-thread error message buffer behind uq_errmsg(). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "uqcow.h"

static _Thread_local char errbuf[4096];

/* Messages are one line: names from hostile images may hold newlines. */
static void one_line(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

int uq_seterr(int err, const char *fmt, ...)
{
	char tmp[sizeof(errbuf)];
	va_list ap;

	/* through a copy: callers may pass uq_errmsg() as an argument */
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	one_line(tmp);
	memcpy(errbuf, tmp, sizeof(errbuf));
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
	one_line(errbuf);
}

void uq_errname(const char *path)
{
	size_t n = strlen(path);

	if (strncmp(errbuf, path, n) || strncmp(errbuf + n, ": ", 2))
		uq_errprefix(path);
}

void uq_errclear(void)
{
	errbuf[0] = '\0';
}

const char *uq_errmsg(void)
{
	return errbuf;
}
