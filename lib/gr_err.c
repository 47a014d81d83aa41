/* gr_err: per-thread error message storage. */
#include "gr_err.h"

#include <stdio.h>
#include <string.h>

#define GR_ERRMSG_MAX 1024

static _Thread_local char errmsg[GR_ERRMSG_MAX];
static _Thread_local int errcode;

/* Messages are printed as one line: control characters that came in with
 * quoted input (a YAML scalar spanning lines, a tab in a name) are written as
 * escapes, so a message can never break a log line or a CLI's one-line rule. */
static void one_line(char *msg, size_t cap)
{
    char tmp[GR_ERRMSG_MAX];
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p && o + 5 < sizeof tmp; p++) {
        if (*p >= 0x20 && *p != 0x7f) {
            tmp[o++] = (char)*p;
            continue;
        }
        tmp[o++] = '\\';
        if (*p == '\n') tmp[o++] = 'n';
        else if (*p == '\r') tmp[o++] = 'r';
        else if (*p == '\t') tmp[o++] = 't';
        else o += (size_t)snprintf(tmp + o, sizeof tmp - o, "x%02x", *p);
    }
    tmp[o] = 0;
    snprintf(msg, cap, "%s", tmp);
}

int gr_vseterr(int code, const char *fmt, va_list ap)
{
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    one_line(errmsg, sizeof errmsg);
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
    one_line(errmsg, sizeof errmsg);
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
