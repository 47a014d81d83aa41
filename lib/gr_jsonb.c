/* gr_jsonb: constructors, copy, equality and canonical serialisation for
 * gr_json trees. Nodes are laid out exactly as gr_json.c lays them out, so
 * gr_json_free releases both. */
#include "gr_jsonb.h"
#include "gr_err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Integral doubles up to 2^53 are exact; beyond that print them as doubles. */
#define JSONB_EXACT_INT 9007199254740992.0

static gr_json *node(gr_json_type t)
{
    gr_json *j = calloc(1, sizeof *j);
    if (!j)
        gr_seterr(GR_ENOMEM, "out of memory building JSON");
    else
        j->type = t;
    return j;
}

gr_json *gr_jsonb_null(void)
{
    return node(GR_JSON_NULL);
}

gr_json *gr_jsonb_bool(int b)
{
    gr_json *j = node(GR_JSON_BOOL);
    if (j) j->boolean = !!b;
    return j;
}

gr_json *gr_jsonb_num(double v)
{
    gr_json *j = node(GR_JSON_NUM);
    if (!j) return NULL;
    j->num = v;
    if (isfinite(v) && v == floor(v) && fabs(v) <= JSONB_EXACT_INT) {
        j->is_int = 1;
        j->i = (int64_t)v;
    }
    return j;
}

gr_json *gr_jsonb_int(int64_t v)
{
    gr_json *j = node(GR_JSON_NUM);
    if (!j) return NULL;
    j->num = (double)v;
    j->is_int = 1;
    j->i = v;
    return j;
}

gr_json *gr_jsonb_strn(const char *s, size_t n)
{
    gr_json *j = node(GR_JSON_STR);
    if (!j) return NULL;
    if (n == SIZE_MAX || !(j->str = malloc(n + 1))) {
        free(j);
        gr_seterr(GR_ENOMEM, "out of memory building JSON");
        return NULL;
    }
    if (n) memcpy(j->str, s, n);
    j->str[n] = 0;
    j->len = n;
    return j;
}

gr_json *gr_jsonb_str(const char *s)
{
    return gr_jsonb_strn(s ? s : "", s ? strlen(s) : 0);
}

gr_json *gr_jsonb_arr(void)
{
    return node(GR_JSON_ARR);
}

gr_json *gr_jsonb_obj(void)
{
    return node(GR_JSON_OBJ);
}

/* Grows the item arrays of j by one slot (keys too for objects). The arrays
 * are sized exactly to len so that no capacity has to be stored in gr_json. */
static int grow1(gr_json *j)
{
    size_t n = j->len + 1;
    if (n > SIZE_MAX / sizeof(void *)) return gr_seterr(GR_ENOMEM, "JSON node too large");
    gr_json **it = realloc(j->items, n * sizeof *it);
    if (!it) return gr_seterr(GR_ENOMEM, "out of memory building JSON");
    j->items = it;
    if (j->type == GR_JSON_OBJ) {
        char **k = realloc(j->keys, n * sizeof *k);
        if (!k) return gr_seterr(GR_ENOMEM, "out of memory building JSON");
        j->keys = k;
        size_t *kl = realloc(j->keylens, n * sizeof *kl);
        if (!kl) return gr_seterr(GR_ENOMEM, "out of memory building JSON");
        j->keylens = kl;
    }
    return 0;
}

int gr_jsonb_push(gr_json *arr, gr_json *v)
{
    if (!v) return gr_seterr(GR_ENOMEM, "out of memory building JSON");
    if (!arr || arr->type != GR_JSON_ARR) {
        gr_json_free(v);
        return gr_seterr(GR_EINVAL, "gr_jsonb_push: not an array");
    }
    if (grow1(arr)) {
        gr_json_free(v);
        return GR_ENOMEM;
    }
    arr->items[arr->len++] = v;
    return 0;
}

gr_json *gr_jsonb_arr_take(gr_json **items, size_t n)
{
    gr_json *j = node(GR_JSON_ARR);
    if (!j) {
        for (size_t i = 0; i < n; i++) gr_json_free(items[i]);
        free(items);
        return NULL;
    }
    j->items = items;
    j->len = n;
    return j;
}

gr_json *gr_jsonb_obj_take(char **keys, gr_json **items, size_t n)
{
    gr_json *j = node(GR_JSON_OBJ);
    size_t *kl = n ? calloc(n, sizeof *kl) : NULL;
    if (!j || (n && !kl)) {
        for (size_t i = 0; i < n; i++) {
            free(keys[i]);
            gr_json_free(items[i]);
        }
        free(keys);
        free(items);
        free(kl);
        free(j);
        gr_seterr(GR_ENOMEM, "out of memory building JSON");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) kl[i] = strlen(keys[i]);
    j->keys = keys;
    j->keylens = kl;
    j->items = items;
    j->len = n;
    return j;
}

static long find_key(const gr_json *obj, const char *key, size_t kl)
{
    for (size_t i = 0; i < obj->len; i++)
        if (obj->keylens[i] == kl && !memcmp(obj->keys[i], key, kl)) return (long)i;
    return -1;
}

int gr_jsonb_set(gr_json *obj, const char *key, gr_json *v)
{
    if (!v) return gr_seterr(GR_ENOMEM, "out of memory building JSON");
    if (!obj || obj->type != GR_JSON_OBJ || !key) {
        gr_json_free(v);
        return gr_seterr(GR_EINVAL, "gr_jsonb_set: not an object");
    }
    size_t kl = strlen(key);
    long at = find_key(obj, key, kl);
    if (at >= 0) {
        gr_json_free(obj->items[at]);
        obj->items[at] = v;
        return 0;
    }
    char *k = strdup(key);
    if (!k || grow1(obj)) {
        free(k);
        gr_json_free(v);
        return gr_seterr(GR_ENOMEM, "out of memory building JSON");
    }
    obj->keys[obj->len] = k;
    obj->keylens[obj->len] = kl;
    obj->items[obj->len] = v;
    obj->len++;
    return 0;
}

int gr_jsonb_del(gr_json *obj, const char *key)
{
    if (!obj || obj->type != GR_JSON_OBJ || !key) return 0;
    long at = find_key(obj, key, strlen(key));
    if (at < 0) return 0;
    gr_json_free(obj->items[at]);
    free(obj->keys[at]);
    size_t rest = obj->len - (size_t)at - 1;
    memmove(obj->items + at, obj->items + at + 1, rest * sizeof *obj->items);
    memmove(obj->keys + at, obj->keys + at + 1, rest * sizeof *obj->keys);
    memmove(obj->keylens + at, obj->keylens + at + 1, rest * sizeof *obj->keylens);
    obj->len--;
    return 1;
}

gr_json *gr_jsonb_copy(const gr_json *j)
{
    if (!j) return NULL;
    gr_json *c = node(j->type);
    if (!c) return NULL;
    c->line = j->line;
    c->boolean = j->boolean;
    c->num = j->num;
    c->is_int = j->is_int;
    c->i = j->i;
    if (j->type == GR_JSON_STR) {
        gr_json *s = gr_jsonb_strn(j->str ? j->str : "", j->str ? j->len : 0);
        if (!s) goto fail;
        c->str = s->str;
        c->len = s->len;
        free(s);
        return c;
    }
    if (j->type != GR_JSON_ARR && j->type != GR_JSON_OBJ) return c;
    if (j->len) {
        if (j->len > SIZE_MAX / sizeof(void *)) goto fail;
        if (!(c->items = calloc(j->len, sizeof *c->items))) goto fail;
        if (j->type == GR_JSON_OBJ) {
            if (!(c->keys = calloc(j->len, sizeof *c->keys))) goto fail;
            if (!(c->keylens = calloc(j->len, sizeof *c->keylens))) goto fail;
        }
    }
    for (size_t i = 0; i < j->len; i++) {
        if (j->type == GR_JSON_OBJ) {
            /* keys may hold NULs: copy by length */
            if (!(c->keys[i] = malloc(j->keylens[i] + 1))) goto fail;
            memcpy(c->keys[i], j->keys[i], j->keylens[i]);
            c->keys[i][j->keylens[i]] = 0;
            c->keylens[i] = j->keylens[i];
        }
        c->len = i + 1; /* so gr_json_free sees what was built */
        if (!(c->items[i] = gr_jsonb_copy(j->items[i]))) goto fail;
    }
    return c;
fail:
    gr_json_free(c);
    gr_seterr(GR_ENOMEM, "out of memory copying JSON");
    return NULL;
}

static int num_equal(const gr_json *a, const gr_json *b)
{
    if (a->is_int && b->is_int) return a->i == b->i;
    return a->num == b->num;
}

int gr_jsonb_equal(const gr_json *a, const gr_json *b)
{
    if (!a || !b) return a == b;
    if (a->type != b->type) return 0;
    switch (a->type) {
    case GR_JSON_NULL:
        return 1;
    case GR_JSON_BOOL:
        return !a->boolean == !b->boolean;
    case GR_JSON_NUM:
        return num_equal(a, b);
    case GR_JSON_STR:
        return a->len == b->len && (!a->len || !memcmp(a->str, b->str, a->len));
    case GR_JSON_ARR:
        if (a->len != b->len) return 0;
        for (size_t i = 0; i < a->len; i++)
            if (!gr_jsonb_equal(a->items[i], b->items[i])) return 0;
        return 1;
    case GR_JSON_OBJ:
        if (a->len != b->len) return 0;
        for (size_t i = 0; i < a->len; i++) {
            long at = -1;
            for (size_t k = 0; k < b->len && at < 0; k++)
                if (b->keylens[k] == a->keylens[i] &&
                    !memcmp(b->keys[k], a->keys[i], a->keylens[i]))
                    at = (long)k;
            if (at < 0 || !gr_jsonb_equal(a->items[i], b->items[at])) return 0;
        }
        return 1;
    }
    return 0;
}

typedef struct {
    const char *key;
    size_t len;
    const gr_json *val;
} member;

static int member_cmp(const void *pa, const void *pb)
{
    const member *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->key, b->key, n);
    if (c) return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static int write_num(gr_buf *b, const gr_json *j)
{
    if (j->is_int) return gr_buf_printf(b, "%lld", (long long)j->i);
    if (!isfinite(j->num)) return gr_seterr(GR_EINVAL, "JSON has no form for NaN or infinity");
    if (j->num == floor(j->num) && fabs(j->num) <= JSONB_EXACT_INT)
        return gr_buf_printf(b, "%lld", (long long)j->num);
    return gr_buf_json_num(b, j->num);
}

static int write_canon(gr_buf *b, const gr_json *j, int depth)
{
    if (depth > 1000) return gr_seterr(GR_EINVAL, "JSON nested too deeply to serialise");
    switch (j->type) {
    case GR_JSON_NULL:
        return gr_buf_puts(b, "null");
    case GR_JSON_BOOL:
        return gr_buf_puts(b, j->boolean ? "true" : "false");
    case GR_JSON_NUM:
        return write_num(b, j);
    case GR_JSON_STR:
        return gr_buf_json_str(b, j->str ? j->str : "", j->str ? j->len : 0);
    case GR_JSON_ARR:
        gr_buf_putc(b, '[');
        for (size_t i = 0; i < j->len; i++) {
            if (i) gr_buf_putc(b, ',');
            int rc = write_canon(b, j->items[i], depth + 1);
            if (rc) return rc;
        }
        return gr_buf_putc(b, ']');
    case GR_JSON_OBJ: {
        member *m = NULL;
        if (j->len) {
            if (!(m = calloc(j->len, sizeof *m)))
                return gr_seterr(GR_ENOMEM, "out of memory serialising JSON");
            for (size_t i = 0; i < j->len; i++)
                m[i] = (member){j->keys[i], j->keylens[i], j->items[i]};
            qsort(m, j->len, sizeof *m, member_cmp);
        }
        gr_buf_putc(b, '{');
        int rc = 0;
        for (size_t i = 0; i < j->len && !rc; i++) {
            if (i) gr_buf_putc(b, ',');
            gr_buf_json_str(b, m[i].key, m[i].len);
            gr_buf_putc(b, ':');
            rc = write_canon(b, m[i].val, depth + 1);
        }
        free(m);
        if (rc) return rc;
        return gr_buf_putc(b, '}');
    }
    }
    return gr_seterr(GR_EINVAL, "bad JSON node type");
}

int gr_jsonb_write(gr_buf *b, const gr_json *j)
{
    if (!j) return gr_seterr(GR_EINVAL, "gr_jsonb_write: no value");
    int rc = write_canon(b, j, 0);
    if (rc) return rc;
    return b->oom ? gr_seterr(GR_ENOMEM, "out of memory serialising JSON") : 0;
}

char *gr_jsonb_canon(const gr_json *j)
{
    gr_buf b = {0};
    if (gr_jsonb_write(&b, j)) {
        gr_buf_free(&b);
        return NULL;
    }
    if (!b.data && gr_buf_puts(&b, "")) return NULL;
    return gr_buf_take(&b);
}
