/* gr_err: per-thread error message storage. */
#include "gr_err.h"

#include <stdio.h>
#include <string.h>

#define GR_ERRMSG_MAX 1024

static _Thread_local char errmsg[GR_ERRMSG_MAX];
static _Thread_local int errcode;

int gr_vseterr(int code, const char *fmt, va_list ap)
{
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    errcode = code;
    return code;
}

int gr_seterr(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gr_vseterr(code, fmt, ap);
    va_end(ap);
    return code;
}

int gr_adderr(int code, const char *fmt, ...)
{
    char prefix[GR_ERRMSG_MAX], old[GR_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errmsg, sizeof old);
    snprintf(errmsg, sizeof errmsg, "%s: %s", prefix, old);
    errcode = code;
    return code;
}

const char *gr_errmsg(void)
{
    return errmsg[0] ? errmsg : gr_errname(errcode);
}

int gr_errcode(void)
{
    return errcode;
}

void gr_clearerr(void)
{
    errmsg[0] = 0;
    errcode = 0;
}

const char *gr_errname(int code)
{
    switch (code) {
    case GR_OK: return "ok";
    case GR_EINVAL: return "invalid input";
    case GR_EIO: return "I/O error";
    case GR_ENOMEM: return "out of memory";
    case GR_ENOTFOUND: return "not found";
    case GR_EFORMAT: return "bad format";
    case GR_ENET: return "network error";
    case GR_ECANCEL: return "cancelled";
    case GR_ETIMEOUT: return "timed out";
    case GR_ESTATE: return "invalid state";
    case GR_EUNSUP: return "not supported";
    }
    return "unknown error";
}

int gr_exit_status(int code)
{
    switch (code) {
    case GR_EINVAL:
    case GR_EFORMAT:
    case GR_ENOTFOUND:
    case GR_EUNSUP: return 2;
    }
    return code == 0 ? 0 : 1;
}

int gr_err_retryable(int code)
{
    return code == GR_EIO || code == GR_ENET || code == GR_ETIMEOUT || code == GR_ENOMEM;
}
