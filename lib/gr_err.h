/* gr_err: error codes and a per-thread error message for the graft library. */
#ifndef GR_ERR_H
#define GR_ERR_H

#include <stdarg.h>

/* Library functions return 0 on success or a negative GR_E* code, and on
 * failure leave a one-line message (naming the file, tensor or field and the
 * rule broken) that gr_errmsg() returns until the next gr_seterr() on the same
 * thread. Nothing in the library calls exit(). */
enum {
    GR_OK = 0,
    GR_EINVAL = -1,    /* bad input: file, parameter, message (exit status 2) */
    GR_EIO = -2,       /* operating system or I/O failure (retry may help) */
    GR_ENOMEM = -3,    /* allocation failed */
    GR_ENOTFOUND = -4, /* missing file, tensor, key, artifact */
    GR_EFORMAT = -5,   /* corrupt or unsupported file format (exit status 2) */
    GR_ENET = -6,      /* network failure (retry may help) */
    GR_ECANCEL = -7,   /* cancelled by request */
    GR_ETIMEOUT = -8,  /* ran out of time */
    GR_ESTATE = -9,    /* operation not valid in the current state */
    GR_EUNSUP = -10,   /* not supported */
};

/* Records code and message for this thread; returns code so callers can write
 * `return gr_seterr(GR_EINVAL, "...")`. */
int gr_seterr(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int gr_vseterr(int code, const char *fmt, va_list ap);
/* Prepends "prefix: " to the current message (to add context on the way up). */
int gr_adderr(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *gr_errmsg(void);
int gr_errcode(void);
void gr_clearerr(void);
const char *gr_errname(int code);
/* Exit status a main() should use for a library error code: 2 for bad input,
 * 1 otherwise. */
int gr_exit_status(int code);
/* Whether retrying an operation that failed with this code can help. */
int gr_err_retryable(int code);

#endif
