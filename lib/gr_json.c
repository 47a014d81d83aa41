/* gr_json: strict recursive-descent JSON parser. Every byte is hostile: lengths
 * are bounded by the input, depth is capped, UTF-8 is validated. */
#include "gr_json.h"
#include "gr_buf.h"
#include "gr_err.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 256

typedef struct {
    const char *s, *end, *p;
    const char *what;
    int line;
    const char *line_start;
    int failed;
} jparser;

static int jfail(jparser *P, const char *msg)
{
    if (!P->failed) {
        P->failed = 1;
        gr_seterr(GR_EFORMAT, "%s%sinvalid JSON at line %d column %d: %s", P->what ? P->what : "",
                  P->what ? ": " : "", P->line, (int)(P->p - P->line_start) + 1, msg);
    }
    return -1;
}

static void skip_ws(jparser *P)
{
    while (P->p < P->end) {
        char c = *P->p;
        if (c == '\n') {
            P->line++;
            P->line_start = P->p + 1;
        } else if (c != ' ' && c != '\t' && c != '\r')
            break;
        P->p++;
    }
}

static gr_json *jnew(jparser *P, gr_json_type t)
{
    gr_json *j = calloc(1, sizeof *j);
    if (!j) {
        jfail(P, "out of memory");
        gr_seterr(GR_ENOMEM, "out of memory parsing JSON");
        return NULL;
    }
    j->type = t;
    j->line = P->line;
    return j;
}

/* Decodes one UTF-8 sequence at p; returns its length or 0 when invalid. */
static int utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    int n;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
    else return 0;
    if (end - p < n) return 0;
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    return n;
}

static int hex4(jparser *P, unsigned *out)
{
    if (P->end - P->p < 4) return jfail(P, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = P->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return jfail(P, "bad hex digit in \\u escape");
    }
    P->p += 4;
    *out = v;
    return 0;
}

static void put_utf8(gr_buf *b, unsigned cp)
{
    char u[4];
    if (cp < 0x80) u[0] = (char)cp, gr_buf_append(b, u, 1);
    else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        gr_buf_append(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        gr_buf_append(b, u, 3);
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        gr_buf_append(b, u, 4);
    }
}

/* Parses a string literal at P->p (which points at the opening quote). */
static int parse_string(jparser *P, char **out, size_t *outlen)
{
    gr_buf b = {0};
    P->p++;
    for (;;) {
        if (P->p >= P->end) {
            gr_buf_free(&b);
            return jfail(P, "unterminated string");
        }
        /* copy a run of plain characters at once */
        const char *run = P->p;
        while (P->p < P->end) {
            unsigned char c = (unsigned char)*P->p;
            if (c == '"' || c == '\\' || c < 0x20) break;
            if (c < 0x80) {
                P->p++;
                continue;
            }
            int n = utf8_len((const unsigned char *)P->p, (const unsigned char *)P->end);
            if (!n) {
                gr_buf_free(&b);
                return jfail(P, "invalid UTF-8 in string");
            }
            P->p += n;
        }
        gr_buf_append(&b, run, (size_t)(P->p - run));
        if (P->p >= P->end) continue;
        unsigned char c = (unsigned char)*P->p;
        if (c == '"') {
            P->p++;
            break;
        }
        if (c < 0x20) {
            gr_buf_free(&b);
            return jfail(P, "control character in string");
        }
        /* backslash escape */
        P->p++;
        if (P->p >= P->end) {
            gr_buf_free(&b);
            return jfail(P, "unterminated escape");
        }
        char e = *P->p++;
        switch (e) {
        case '"': gr_buf_putc(&b, '"'); break;
        case '\\': gr_buf_putc(&b, '\\'); break;
        case '/': gr_buf_putc(&b, '/'); break;
        case 'b': gr_buf_putc(&b, '\b'); break;
        case 'f': gr_buf_putc(&b, '\f'); break;
        case 'n': gr_buf_putc(&b, '\n'); break;
        case 'r': gr_buf_putc(&b, '\r'); break;
        case 't': gr_buf_putc(&b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(P, &cp)) goto bad;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                jfail(P, "lone low surrogate in \\u escape");
                goto bad;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (P->end - P->p < 6 || P->p[0] != '\\' || P->p[1] != 'u') {
                    jfail(P, "lone high surrogate in \\u escape");
                    goto bad;
                }
                P->p += 2;
                if (hex4(P, &lo)) goto bad;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    jfail(P, "bad surrogate pair in \\u escape");
                    goto bad;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            put_utf8(&b, cp);
            break;
        }
        default: jfail(P, "unknown escape"); goto bad;
        }
    }
    if (b.oom) {
        gr_buf_free(&b);
        return jfail(P, "out of memory");
    }
    *outlen = b.len;
    *out = gr_buf_take(&b);
    return 0;
bad:
    gr_buf_free(&b);
    return -1;
}

static int parse_number(jparser *P, gr_json *j)
{
    const char *start = P->p;
    int is_int = 1;
    if (P->p < P->end && *P->p == '-') P->p++;
    if (P->p >= P->end) return jfail(P, "truncated number");
    if (*P->p == '0') P->p++;
    else if (*P->p >= '1' && *P->p <= '9')
        while (P->p < P->end && *P->p >= '0' && *P->p <= '9') P->p++;
    else return jfail(P, "bad number");
    if (P->p < P->end && *P->p == '.') {
        is_int = 0;
        P->p++;
        if (P->p >= P->end || *P->p < '0' || *P->p > '9') return jfail(P, "bad fraction");
        while (P->p < P->end && *P->p >= '0' && *P->p <= '9') P->p++;
    }
    if (P->p < P->end && (*P->p == 'e' || *P->p == 'E')) {
        is_int = 0;
        P->p++;
        if (P->p < P->end && (*P->p == '+' || *P->p == '-')) P->p++;
        if (P->p >= P->end || *P->p < '0' || *P->p > '9') return jfail(P, "bad exponent");
        while (P->p < P->end && *P->p >= '0' && *P->p <= '9') P->p++;
    }
    size_t n = (size_t)(P->p - start);
    char tmp[64];
    char *heap = NULL, *txt = tmp;
    if (n >= sizeof tmp) {
        heap = malloc(n + 1);
        if (!heap) return jfail(P, "out of memory");
        txt = heap;
    }
    memcpy(txt, start, n);
    txt[n] = 0;
    j->num = strtod(txt, NULL);
    if (!isfinite(j->num)) {
        free(heap);
        return jfail(P, "number out of range");
    }
    if (is_int) {
        errno = 0;
        long long v = strtoll(txt, NULL, 10);
        if (errno == 0) {
            j->is_int = 1;
            j->i = v;
        }
    }
    free(heap);
    return 0;
}

static int cmp_keyidx(const void *a, const void *b, void *ctx);

static int keys_unique(gr_json *j)
{
    if (j->len < 2) return 1;
    if (j->len <= 8) {
        for (size_t a = 0; a < j->len; a++)
            for (size_t b = a + 1; b < j->len; b++)
                if (j->keylens[a] == j->keylens[b] && !memcmp(j->keys[a], j->keys[b], j->keylens[a]))
                    return 0;
        return 1;
    }
    size_t *idx = malloc(j->len * sizeof *idx);
    if (!idx) return 1; /* cannot check; the caller's lookups take the first */
    for (size_t i = 0; i < j->len; i++) idx[i] = i;
    qsort_r(idx, j->len, sizeof *idx, cmp_keyidx, j);
    int ok = 1;
    for (size_t i = 1; i < j->len && ok; i++)
        if (cmp_keyidx(&idx[i - 1], &idx[i], j) == 0) ok = 0;
    free(idx);
    return ok;
}

static int cmp_keyidx(const void *a, const void *b, void *ctx)
{
    const gr_json *j = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    size_t lx = j->keylens[x], ly = j->keylens[y];
    int c = memcmp(j->keys[x], j->keys[y], lx < ly ? lx : ly);
    if (c) return c;
    return lx < ly ? -1 : lx > ly;
}

static int grow(jparser *P, gr_json *j, size_t *cap, int with_keys)
{
    if (j->len < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    gr_json **items = realloc(j->items, nc * sizeof *items);
    if (!items) return jfail(P, "out of memory");
    j->items = items;
    if (with_keys) {
        char **keys = realloc(j->keys, nc * sizeof *keys);
        if (!keys) return jfail(P, "out of memory");
        j->keys = keys;
        size_t *kl = realloc(j->keylens, nc * sizeof *kl);
        if (!kl) return jfail(P, "out of memory");
        j->keylens = kl;
    }
    *cap = nc;
    return 0;
}

static gr_json *parse_value(jparser *P, int depth)
{
    if (depth > JSON_MAX_DEPTH) {
        jfail(P, "nesting too deep");
        return NULL;
    }
    skip_ws(P);
    if (P->p >= P->end) {
        jfail(P, "unexpected end of input");
        return NULL;
    }
    char c = *P->p;
    gr_json *j = NULL;
    if (c == '{') {
        if (!(j = jnew(P, GR_JSON_OBJ))) return NULL;
        size_t cap = 0;
        P->p++;
        skip_ws(P);
        if (P->p < P->end && *P->p == '}') {
            P->p++;
            return j;
        }
        for (;;) {
            skip_ws(P);
            if (P->p >= P->end || *P->p != '"') {
                jfail(P, "expected a string key");
                goto fail;
            }
            if (grow(P, j, &cap, 1)) goto fail;
            char *key;
            size_t klen;
            if (parse_string(P, &key, &klen)) goto fail;
            j->keys[j->len] = key;
            j->keylens[j->len] = klen;
            j->items[j->len] = NULL;
            j->len++;
            skip_ws(P);
            if (P->p >= P->end || *P->p != ':') {
                jfail(P, "expected ':' after key");
                goto fail;
            }
            P->p++;
            if (!(j->items[j->len - 1] = parse_value(P, depth + 1))) goto fail;
            skip_ws(P);
            if (P->p < P->end && *P->p == ',') {
                P->p++;
                continue;
            }
            if (P->p < P->end && *P->p == '}') {
                P->p++;
                break;
            }
            jfail(P, "expected ',' or '}' in object");
            goto fail;
        }
        if (!keys_unique(j)) {
            jfail(P, "duplicate key in object");
            goto fail;
        }
        return j;
    }
    if (c == '[') {
        if (!(j = jnew(P, GR_JSON_ARR))) return NULL;
        size_t cap = 0;
        P->p++;
        skip_ws(P);
        if (P->p < P->end && *P->p == ']') {
            P->p++;
            return j;
        }
        for (;;) {
            if (grow(P, j, &cap, 0)) goto fail;
            if (!(j->items[j->len] = parse_value(P, depth + 1))) goto fail;
            j->len++;
            skip_ws(P);
            if (P->p < P->end && *P->p == ',') {
                P->p++;
                continue;
            }
            if (P->p < P->end && *P->p == ']') {
                P->p++;
                break;
            }
            jfail(P, "expected ',' or ']' in array");
            goto fail;
        }
        return j;
    }
    if (c == '"') {
        if (!(j = jnew(P, GR_JSON_STR))) return NULL;
        if (parse_string(P, &j->str, &j->len)) goto fail;
        return j;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        if (!(j = jnew(P, GR_JSON_NUM))) return NULL;
        if (parse_number(P, j)) goto fail;
        return j;
    }
    static const struct {
        const char *lit;
        gr_json_type t;
        int b;
    } lits[] = {{"true", GR_JSON_BOOL, 1}, {"false", GR_JSON_BOOL, 0}, {"null", GR_JSON_NULL, 0}};
    for (size_t k = 0; k < sizeof lits / sizeof lits[0]; k++) {
        size_t n = strlen(lits[k].lit);
        if ((size_t)(P->end - P->p) >= n && !memcmp(P->p, lits[k].lit, n)) {
            if (!(j = jnew(P, lits[k].t))) return NULL;
            j->boolean = lits[k].b;
            P->p += n;
            return j;
        }
    }
    jfail(P, "unexpected character");
    return NULL;
fail:
    gr_json_free(j);
    return NULL;
}

gr_json *gr_json_parse(const char *s, size_t len, const char *what)
{
    jparser P = {.s = s, .end = s + len, .p = s, .what = what, .line = 1, .line_start = s};
    gr_json *j = parse_value(&P, 0);
    if (!j) return NULL;
    skip_ws(&P);
    if (P.p != P.end) {
        jfail(&P, "trailing characters after the JSON value");
        gr_json_free(j);
        return NULL;
    }
    return j;
}

gr_json *gr_json_parse_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: cannot open: %s", path,
                  strerror(errno));
        return NULL;
    }
    gr_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) gr_buf_append(&b, chunk, n);
    int err = ferror(f);
    fclose(f);
    if (err || b.oom) {
        gr_buf_free(&b);
        gr_seterr(err ? GR_EIO : GR_ENOMEM, "%s: cannot read", path);
        return NULL;
    }
    gr_json *j = gr_json_parse(b.data ? b.data : "", b.len, path);
    gr_buf_free(&b);
    return j;
}

void gr_json_free(gr_json *j)
{
    if (!j) return;
    for (size_t i = 0; i < j->len; i++) {
        if (j->items) gr_json_free(j->items[i]);
        if (j->keys) free(j->keys[i]);
    }
    free(j->items);
    free(j->keys);
    free(j->keylens);
    free(j->str);
    free(j);
}

const gr_json *gr_json_get(const gr_json *j, const char *key)
{
    if (!j || j->type != GR_JSON_OBJ) return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < j->len; i++)
        if (j->keylens[i] == kl && !memcmp(j->keys[i], key, kl)) return j->items[i];
    return NULL;
}

const char *gr_json_get_str(const gr_json *j, const char *key, const char *def)
{
    const gr_json *v = gr_json_get(j, key);
    return v && v->type == GR_JSON_STR ? v->str : def;
}

double gr_json_get_num(const gr_json *j, const char *key, double def)
{
    const gr_json *v = gr_json_get(j, key);
    return v && v->type == GR_JSON_NUM ? v->num : def;
}

int64_t gr_json_get_int(const gr_json *j, const char *key, int64_t def)
{
    const gr_json *v = gr_json_get(j, key);
    return v && v->type == GR_JSON_NUM && v->is_int ? v->i : def;
}

int gr_json_get_bool(const gr_json *j, const char *key, int def)
{
    const gr_json *v = gr_json_get(j, key);
    return v && v->type == GR_JSON_BOOL ? v->boolean : def;
}

const char *gr_json_type_name(gr_json_type t)
{
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < 6 ? names[t] : "?";
}
