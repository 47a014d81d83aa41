/* gr_buf: growable byte buffer. */
#include "gr_buf.h"
#include "gr_err.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gr_buf_reserve(gr_buf *b, size_t extra)
{
    if (b->oom) return GR_ENOMEM;
    if (extra > SIZE_MAX - b->len - 1) goto oom;
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) goto oom;
    b->data = p;
    b->cap = cap;
    return 0;
oom:
    b->oom = 1;
    return gr_seterr(GR_ENOMEM, "out of memory growing a buffer");
}

int gr_buf_append(gr_buf *b, const void *p, size_t n)
{
    if (gr_buf_reserve(b, n)) return GR_ENOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int gr_buf_puts(gr_buf *b, const char *s)
{
    return gr_buf_append(b, s, strlen(s));
}

int gr_buf_putc(gr_buf *b, char c)
{
    return gr_buf_append(b, &c, 1);
}

int gr_buf_printf(gr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return gr_seterr(GR_EINVAL, "bad format string");
    if ((size_t)n < sizeof tmp) return gr_buf_append(b, tmp, (size_t)n);
    if (gr_buf_reserve(b, (size_t)n)) return GR_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int gr_buf_json_str(gr_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (gr_buf_reserve(b, n + 2)) return GR_ENOMEM;
    gr_buf_putc(b, '"');
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        gr_buf_append(b, s + start, i - start);
        start = i + 1;
        switch (c) {
        case '"': gr_buf_puts(b, "\\\""); break;
        case '\\': gr_buf_puts(b, "\\\\"); break;
        case '\n': gr_buf_puts(b, "\\n"); break;
        case '\r': gr_buf_puts(b, "\\r"); break;
        case '\t': gr_buf_puts(b, "\\t"); break;
        default: {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            gr_buf_append(b, e, 6);
        }
        }
    }
    gr_buf_append(b, s + start, n - start);
    return gr_buf_putc(b, '"');
}

int gr_buf_json_num(gr_buf *b, double v)
{
    if (!isfinite(v)) return gr_buf_puts(b, "null");
    if (fabs(v) < 1e15 && v == (double)(long long)v) return gr_buf_printf(b, "%lld", (long long)v);
    char tmp[32];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    return gr_buf_puts(b, tmp);
}

char *gr_buf_take(gr_buf *b)
{
    char *p = b->data;
    if (!p) p = calloc(1, 1);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
    return p;
}

void gr_buf_reset(gr_buf *b)
{
    b->len = 0;
    b->oom = 0;
    if (b->data) b->data[0] = 0;
}

void gr_buf_free(gr_buf *b)
{
    if (!b) return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}
