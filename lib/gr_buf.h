/* gr_buf: a growable byte buffer with formatted and JSON-escaped appends. */
#ifndef GR_BUF_H
#define GR_BUF_H

#include <stddef.h>
#include <stdint.h>

/* A zero-initialised gr_buf is an empty buffer. data is always NUL-terminated
 * after any successful append (the NUL is not counted in len). Appends return
 * 0 or GR_ENOMEM; after a failed append the buffer is marked failed (oom=1)
 * and further appends are no-ops, so builders can check once at the end. */
typedef struct gr_buf {
    char *data;
    size_t len, cap;
    int oom;
} gr_buf;

int gr_buf_reserve(gr_buf *b, size_t extra);
int gr_buf_append(gr_buf *b, const void *p, size_t n);
int gr_buf_puts(gr_buf *b, const char *s);
int gr_buf_putc(gr_buf *b, char c);
int gr_buf_printf(gr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s (n bytes) as a JSON string literal with quotes and escapes. */
int gr_buf_json_str(gr_buf *b, const char *s, size_t n);
/* Appends a double as JSON: shortest round-trip form, null for NaN/Inf. */
int gr_buf_json_num(gr_buf *b, double v);
/* Takes ownership of the data away from b (caller frees); b becomes empty. */
char *gr_buf_take(gr_buf *b);
void gr_buf_reset(gr_buf *b);
void gr_buf_free(gr_buf *b);

#endif
