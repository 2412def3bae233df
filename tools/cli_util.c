/* SPDX-License-Identifier: MIT */
/* Helpers every verb uses: option values, sizes in qemu's notation, error
 * lines, JSON with qemu's layout and escaping, the -p progress bar. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_open_defaults(struct cli_open *o)
{
	memset(o, 0, sizeof(*o));
	o->format = UQ_FMT_PROBE;
	o->backend = UQ_IO_AUTO;
}

int cli_set_format(enum uq_format *fmt, const char *arg)
{
	if (!strcmp(arg, "qcow2"))
		*fmt = UQ_FMT_QCOW2;
	else if (!strcmp(arg, "raw"))
		*fmt = UQ_FMT_RAW;
	else {
		cli_error("unknown format '%s' (supported: qcow2, raw)", arg);
		return -EINVAL;
	}
	return 0;
}

/* qemu's cache modes; only none and directsync bypass the page cache. */
int cli_set_cache(struct cli_open *o, const char *arg)
{
	if (!strcmp(arg, "none") || !strcmp(arg, "directsync"))
		o->flags |= UQ_OPEN_DIRECT;
	else if (!strcmp(arg, "writeback") || !strcmp(arg, "writethrough") ||
		 !strcmp(arg, "unsafe"))
		o->flags &= ~UQ_OPEN_DIRECT;
	else {
		cli_error("invalid cache mode '%s' (none, writeback, writethrough, "
			  "directsync or unsafe)", arg);
		return -EINVAL;
	}
	return 0;
}

int cli_set_backend(struct cli_open *o, const char *arg)
{
	if (!strcmp(arg, "io_uring"))
		o->backend = UQ_IO_URING;
	else if (!strcmp(arg, "psync") || !strcmp(arg, "threads"))
		o->backend = UQ_IO_PSYNC;   /* qemu-io -i threads: plain preadv */
	else if (!strcmp(arg, "auto"))
		o->backend = UQ_IO_AUTO;
	else {
		cli_error("invalid I/O backend '%s' (io_uring, psync or auto)", arg);
		return -EINVAL;
	}
	return 0;
}

static int set_cache_size(uint64_t *out, const char *name, const char *arg)
{
	uint64_t v;

	if (cli_parse_size(arg, &v) < 0) {
		cli_error("invalid %s '%s'", name, arg);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int set_l2_cache(struct cli_open *o, const char *arg)
{
	return set_cache_size(&o->l2_cache_size, "l2-cache-size", arg);
}

static int set_rc_cache(struct cli_open *o, const char *arg)
{
	return set_cache_size(&o->refcount_cache_size, "refcount-cache-size", arg);
}

/* on/off options set or clear one UQ_OPEN_* flag; 'set_on' says which
 * value sets it */
static int set_flag(struct cli_open *o, const char *key, const char *val, unsigned flag,
		    bool set_on)
{
	bool on;

	if (!strcmp(val, "on") || !strcmp(val, "true"))
		on = true;
	else if (!strcmp(val, "off") || !strcmp(val, "false"))
		on = false;
	else {
		cli_error("open option '%s' takes on or off, not '%s'", key, val);
		return -EINVAL;
	}
	if (on == set_on)
		o->flags |= flag;
	else
		o->flags &= ~flag;
	return 0;
}

/* One open option uqcow knows (-o and --image-opts share them). */
static int set_open_option(struct cli_open *o, const char *key, const char *val)
{
	if (!strcmp(key, "l2-cache-size") || !strcmp(key, "l2_cache_size"))
		return set_l2_cache(o, val);
	if (!strcmp(key, "refcount-cache-size") || !strcmp(key, "refcount_cache_size"))
		return set_rc_cache(o, val);
	if (!strcmp(key, "discard-no-unref"))
		return set_flag(o, key, val, UQ_OPEN_DISCARD_NO_UNREF, true);
	if (!strcmp(key, "pass-discard-request"))
		return set_flag(o, key, val, UQ_OPEN_KEEP_DISCARDED, false);
	cli_error("unknown open option '%s' (known: l2-cache-size, "
		  "refcount-cache-size, discard-no-unref, pass-discard-request)", key);
	return -EINVAL;
}

/* "-o l2-cache-size=1M[,...]": the open options uqcow knows. */
int cli_set_open_options(struct cli_open *o, const char *arg)
{
	char *dup = strdup(arg), *save = NULL, *kv;
	int ret = 0;

	if (!dup)
		return -ENOMEM;
	for (kv = strtok_r(dup, ",", &save); kv && !ret;
	     kv = strtok_r(NULL, ",", &save)) {
		char *val = strchr(kv, '=');

		if (!val) {
			cli_error("open option '%s' needs a value (key=value)", kv);
			ret = -EINVAL;
			break;
		}
		*val++ = '\0';
		ret = set_open_option(o, kv, val);
	}
	free(dup);
	return ret;
}

int cli_open_option(struct cli_open *o, int opt, const char *arg)
{
	switch (opt) {
	case CLI_OPT_IO:
		return cli_set_backend(o, arg) ? -EINVAL : 1;
	case CLI_OPT_CACHE:
		return cli_set_cache(o, arg) ? -EINVAL : 1;
	case CLI_OPT_L2_CACHE:
		return set_l2_cache(o, arg) ? -EINVAL : 1;
	case CLI_OPT_RC_CACHE:
		return set_rc_cache(o, arg) ? -EINVAL : 1;
	case CLI_OPT_IMAGE_OPTS:
		o->image_opts = true;
		return 1;
	case 'U':
		/* read-only opens share everything; writable ones refuse it */
		o->flags |= UQ_OPEN_FORCE_SHARE;
		return 1;
	default:
		return 0;
	}
}

int cli_image_option(struct cli_open *o, int opt, const char *arg, bool dash_o)
{
	int r = cli_open_option(o, opt, arg);

	if (r)
		return r;
	switch (opt) {
	case 'f':
		return cli_set_format(&o->format, arg) ? -EINVAL : 1;
	case 't':
		return cli_set_cache(o, arg) ? -EINVAL : 1;
	case 'o':
		if (!dash_o)
			return 0;
		return cli_set_open_options(o, arg) ? -EINVAL : 1;
	default:
		return 0;
	}
}

/* Say once per run that some file of img's chain holds no image locks
 * because its file system can't lock: QEMU's users of the image go
 * undetected, both ways. */
static void warn_unlocked(uq_image *img)
{
	static bool warned;
	struct uq_info *in;

	if (warned || !(in = malloc(sizeof(*in))))
		return;
	for (; img && !warned; img = uq_backing(img)) {
		in->struct_size = sizeof(*in);
		if (uq_get_info(img, in) < 0 || !in->lock_error)
			continue;
		cli_error("warning: %s: no OFD locks here (%s): opened without image "
			  "locking, so other programs using it aren't detected",
			  in->filename, strerror(in->lock_error));
		warned = true;
	}
	free(in);
}

/* Next key=value of an --image-opts string into buf (",," unescaped);
 * returns the rest, or NULL at the end. */
static const char *next_image_opt(const char *s, char *buf, size_t n)
{
	size_t k = 0;

	if (!*s)
		return NULL;
	for (; *s; s++) {
		if (*s == ',' && s[1] == ',')
			s++;
		else if (*s == ',')
			break;
		if (k + 1 < n)
			buf[k++] = *s;
	}
	buf[k] = '\0';
	return *s ? s + 1 : s;
}

static int parse_image_opts(const char *spec, struct cli_open *o, char *path, size_t n)
{
	char kv[4096];
	const char *s = spec;

	*path = '\0';
	while ((s = next_image_opt(s, kv, sizeof(kv)))) {
		char *val = strchr(kv, '=');
		int ret = 0;

		if (!val) {
			cli_error("--image-opts: '%s' needs a value (key=value)", kv);
			return -EINVAL;
		}
		*val++ = '\0';
		if (!strcmp(kv, "driver")) {
			ret = cli_set_format(&o->format, val);
		} else if (!strcmp(kv, "file.filename") || !strcmp(kv, "filename") ||
			   !strcmp(kv, "file")) {
			if (strlen(val) >= n) {
				cli_error("--image-opts: file name too long");
				return -ENAMETOOLONG;
			}
			strcpy(path, val);
		} else if (!strcmp(kv, "file.driver")) {
			if (strcmp(val, "file")) {
				cli_error("--image-opts: file.driver=%s: only 'file' is supported", val);
				return -EINVAL;
			}
		} else if (!strcmp(kv, "cache.direct")) {
			ret = set_flag(o, kv, val, UQ_OPEN_DIRECT, true);
		} else {
			ret = set_open_option(o, kv, val);
		}
		if (ret < 0)
			return ret;
	}
	if (!*path) {
		cli_error("--image-opts: no file.filename= in '%s'", spec);
		return -EINVAL;
	}
	return 0;
}

int cli_open_image(const char *spec, const struct cli_open *given,
		   unsigned extra_flags, uq_image **img)
{
	struct cli_open mine = *given, *o = &mine;
	char buf[4096];
	const char *path = spec;

	if (given->image_opts) {
		int r = parse_image_opts(spec, &mine, buf, sizeof(buf));

		if (r < 0) {
			*img = NULL;
			return r;
		}
		path = buf;
	}
	struct uq_open_opts opts = {
		.struct_size = sizeof(opts),
		.flags = o->flags | extra_flags,
		.backend = o->backend,
		.format = o->format,
		.l2_cache_size = o->l2_cache_size,
		.refcount_cache_size = o->refcount_cache_size,
	};
	int ret = uq_open(path, &opts, img);

	if (ret < 0) {
		*img = NULL;
		/* -EAGAIN: another process holds the image (uqcow.h) */
		if (ret == -EAGAIN && !(opts.flags & UQ_OPEN_FORCE_SHARE) && *uq_errmsg())
			cli_error("%s -U (--force-share) opens it read-only without "
				  "this lock.", uq_errmsg());
		else
			cli_error_uq(ret, path);
		return ret;
	}
	warn_unlocked(*img);
	return 0;
}

int cli_lock_output(const char *path, uq_image **hold)
{
	/* raw, whatever the file holds now: it is about to be replaced */
	struct uq_open_opts opts = {
		.struct_size = sizeof(opts),
		.flags = UQ_OPEN_RDWR,
		.backend = UQ_IO_PSYNC,
		.format = UQ_FMT_RAW,
	};
	int ret = uq_open(path, &opts, hold);

	if (ret < 0) {
		*hold = NULL;
		cli_error_uq(ret, path);
	}
	return ret;
}

int cli_set_output(bool *json, const char *arg)
{
	if (!strcmp(arg, "json"))
		*json = true;
	else if (!strcmp(arg, "human"))
		*json = false;
	else {
		cli_error("--output must be human or json, not '%s'", arg);
		return -EINVAL;
	}
	return 0;
}

static uint64_t suffix_mul(char c)
{
	switch (c) {
	case 'b': case 'B': return 1;
	case 'k': case 'K': return 1ull << 10;
	case 'm': case 'M': return 1ull << 20;
	case 'g': case 'G': return 1ull << 30;
	case 't': case 'T': return 1ull << 40;
	case 'p': case 'P': return 1ull << 50;
	case 'e': case 'E': return 1ull << 60;
	default: return 0;
	}
}

/* Follows qemu_strtosz: decimal with an optional fraction and suffix, or
 * hex (0x...) with neither; a fraction needs a suffix above bytes. */
int cli_parse_size(const char *s, uint64_t *out)
{
	const char *p = s;
	uint64_t val = 0, mul;
	long double frac = 0;
	bool hex = false;

	if (!s || (*p < '0' || *p > '9'))
		return -EINVAL;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		hex = true;
		p += 2;
		if (!*p)
			return -EINVAL;
		for (; *p; p++) {
			int d;

			if (*p >= '0' && *p <= '9')
				d = *p - '0';
			else if (*p >= 'a' && *p <= 'f')
				d = *p - 'a' + 10;
			else if (*p >= 'A' && *p <= 'F')
				d = *p - 'A' + 10;
			else
				break;
			if (val >> 60)
				return -ERANGE;
			val = val << 4 | (uint64_t)d;
		}
	} else {
		for (; *p >= '0' && *p <= '9'; p++) {
			if (val > (UINT64_MAX - 9) / 10)
				return -ERANGE;
			val = val * 10 + (uint64_t)(*p - '0');
		}
		if (*p == '.') {
			long double scale = 0.1L;

			if (p[1] < '0' || p[1] > '9')
				return -EINVAL;
			for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
				frac += (*p - '0') * scale;
		}
	}
	mul = *p ? suffix_mul(*p) : 1;
	if (!mul || (*p && p[1]) || (hex && *p))
		return -EINVAL;
	if (mul == 1) {
		if (frac != 0)
			return -EINVAL;
		*out = val;
		return 0;
	}
	if (val > UINT64_MAX / mul)
		return -ERANGE;
	val *= mul;
	/* Truncate the fraction to whole bytes, as qemu does. */
	{
		uint64_t extra = (uint64_t)(frac * (long double)mul);

		if (val > UINT64_MAX - extra)
			return -ERANGE;
		*out = val + extra;
	}
	return 0;
}

void cli_size_str(uint64_t v, char *buf, size_t len)
{
	static const char *const suffixes[] = {
		"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB",
	};
	int i = 0;

	/* Switch units once the value reaches 1000 of the current one, so
	 * the number never shows four integer digits (qemu's size_to_str). */
	while (i < 6 && (double)v / (1000.0 / 1024.0) >=
	       (double)(1ull << (10 * (i + 1))))
		i++;
	snprintf(buf, len, "%0.3g %s", (double)v / (double)(1ull << (10 * i)),
		 suffixes[i]);
}

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("uqcow: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void cli_error_uq(int err, const char *what)
{
	const char *msg = uq_errmsg();

	if (msg && *msg)
		cli_error("%s", msg);
	else
		cli_error("%s: %s", what, strerror(err < 0 ? -err : err));
}

void cli_usage(const struct cli_verb *v, FILE *f)
{
	fprintf(f, "usage: uqcow %s\n", v->synopsis);
	if (v->help && *v->help)
		fprintf(f, "\n%s", v->help);
}

int cli_bad_usage(const struct cli_verb *v, const char *fmt, ...)
{
	va_list ap;

	if (fmt) {
		fputs("uqcow: ", stderr);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	fprintf(stderr, "usage: uqcow %s\nTry 'uqcow %s --help' for more "
		"information.\n", v->synopsis, v->name);
	return CLI_EXIT_FAIL;
}

int cli_opt_error(const struct cli_verb *v, int c, char **argv)
{
	const char *arg = optind > 0 ? argv[optind - 1] : "?";

	if (c == ':')
		return cli_bad_usage(v, "option '%s' needs an argument", arg);
	if (optopt)
		return cli_bad_usage(v, "invalid option '-%c'", optopt);
	return cli_bad_usage(v, "invalid option '%s'", arg);
}

/* ---- JSON ---- */

void cli_json_init(struct cli_json *j, FILE *f)
{
	j->f = f;
	j->depth = 0;
	j->fresh = true;
}

static void json_item(struct cli_json *j, const char *key)
{
	if (j->depth > 0) {
		if (!j->fresh)
			fputc(',', j->f);
		fputc('\n', j->f);
		for (int i = 0; i < j->depth; i++)
			fputs("    ", j->f);
	}
	j->fresh = false;
	if (key) {
		cli_json_quote(j->f, key);
		fputs(": ", j->f);
	}
}

void cli_json_begin(struct cli_json *j, const char *key, char open)
{
	json_item(j, key);
	fputc(open, j->f);
	j->depth++;
	j->fresh = true;
}

void cli_json_end(struct cli_json *j, char close)
{
	j->depth--;
	if (!j->fresh) {
		fputc('\n', j->f);
		for (int i = 0; i < j->depth; i++)
			fputs("    ", j->f);
	}
	fputc(close, j->f);
	j->fresh = false;
}

void cli_json_str(struct cli_json *j, const char *key, const char *val)
{
	json_item(j, key);
	cli_json_quote(j->f, val);
}

void cli_json_double(struct cli_json *j, const char *key, int decimals, double val)
{
	json_item(j, key);
	fprintf(j->f, "%.*f", decimals, val);
}

void cli_json_u64(struct cli_json *j, const char *key, uint64_t val)
{
	json_item(j, key);
	fprintf(j->f, "%llu", (unsigned long long)val);
}

void cli_json_bool(struct cli_json *j, const char *key, bool val)
{
	json_item(j, key);
	fputs(val ? "true" : "false", j->f);
}

/* Decode one UTF-8 code point at s; *n gets the bytes used. Returns -1
 * for a malformed, overlong or surrogate sequence (qemu prints U+FFFD). */
static long utf8_decode(const unsigned char *s, size_t *n)
{
	static const long min_cp[] = { 0, 0, 0x80, 0x800, 0x10000 };
	unsigned char c = s[0];
	size_t len, i;
	long cp;

	if (c < 0x80) {
		*n = 1;
		return c;
	}
	if (c >= 0xc0 && c < 0xe0) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c < 0xf0) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c < 0xf8) {
		len = 4;
		cp = c & 0x07;
	} else {
		*n = 1;
		return -1;
	}
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80) {
			*n = i;   /* resume at the byte that broke the sequence */
			return -1;
		}
		cp = cp << 6 | (s[i] & 0x3f);
	}
	*n = len;
	if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	return cp;
}

void cli_json_quote(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', f);
	while (*p) {
		size_t n;
		long cp = utf8_decode(p, &n);

		p += n;
		switch (cp) {
		case '"':  fputs("\\\"", f); continue;
		case '\\': fputs("\\\\", f); continue;
		case '\b': fputs("\\b", f); continue;
		case '\f': fputs("\\f", f); continue;
		case '\n': fputs("\\n", f); continue;
		case '\r': fputs("\\r", f); continue;
		case '\t': fputs("\\t", f); continue;
		}
		if (cp < 0)
			cp = 0xfffd;
		if (cp > 0xffff)
			fprintf(f, "\\u%04lX\\u%04lX", 0xd800 + ((cp - 0x10000) >> 10),
				0xdc00 + ((cp - 0x10000) & 0x3ff));
		else if (cp < 0x20 || cp >= 0x7f)
			fprintf(f, "\\u%04lX", cp);
		else
			fputc((int)cp, f);
	}
	fputc('"', f);
}

/* ---- progress ---- */

static void progress_draw(double pct)
{
	fprintf(stderr, "    (%3.2f/100%%)\r", pct);
	fflush(stderr);
}

void cli_progress_start(struct cli_progress *p, bool on, uint64_t total)
{
	p->on = on;
	p->total = total;
	p->done = 0;
	p->shown = 0;
	if (on)
		progress_draw(0.0);
}

void cli_progress_add(struct cli_progress *p, uint64_t bytes)
{
	double pct;

	p->done += bytes;
	if (!p->on || !p->total)
		return;
	if (p->done > p->total)
		p->done = p->total;
	pct = (double)p->done * 100.0 / (double)p->total;
	/* Redraw once per whole percent, like qemu-img's min_skip of 1. */
	if ((int)pct > p->shown) {
		p->shown = (int)pct;
		progress_draw(pct);
	}
}

void cli_progress_end(struct cli_progress *p)
{
	if (!p->on)
		return;
	if (p->shown < 100)
		progress_draw(100.0);
	fputc('\n', stderr);
}

bool cli_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;

	if (!len)
		return true;
	/* The first byte is zero and every byte equals the next one. */
	return p[0] == 0 && !memcmp(p, p + 1, len - 1);
}

int cli_get_info(uq_image *img, const char *path, struct uq_info **out)
{
	struct uq_info *in = malloc(sizeof(*in));
	int ret;

	*out = in;
	if (!in) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	in->struct_size = sizeof(*in);
	ret = uq_get_info(img, in);
	if (ret < 0)
		cli_error_uq(ret, path);
	return ret;
}

int cli_image_size(uq_image *img, const char *path, uint64_t *size)
{
	struct uq_info *in;
	int ret = cli_get_info(img, path, &in);

	if (ret == 0)
		*size = in->virtual_size;
	free(in);
	return ret;
}

int cli_print_stats(uq_image *img, const char *path, struct cli_json *j)
{
	struct uq_stats s = { .struct_size = sizeof(s) };
	int ret = uq_get_stats(img, &s);

	if (ret < 0) {
		cli_error_uq(ret, path);
		return ret;
	}
	if (j) {
		cli_json_begin(j, "stats", '{');
		for (unsigned i = 0; i < UQ_STAT_COUNT; i++)
			cli_json_u64(j, uq_stat_name(i), s.v[i]);
		cli_json_end(j, '}');
		return 0;
	}
	printf("Costs:\n");
	for (unsigned i = 0; i < UQ_STAT_COUNT; i++)
		if (s.v[i])
			printf("  %-22s %" PRIu64 "\n", uq_stat_name(i), s.v[i]);
	return 0;
}
