/* gr_mparam: mergekit-style parameter values (scalar, layer gradient,
 * {filter, value} lists) and the layer position of a tensor name. */
#include "gr_mparam.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gr_err.h"

#define MAX_LAYER_DIGITS 9 /* layer numbers stay far below LONG_MAX */

enum { MP_SCALAR, MP_GRADIENT, MP_FILTERS };

typedef struct mp_entry {
    char *filter; /* NULL: matches every tensor */
    gr_mparam *value;
} mp_entry;

struct gr_mparam {
    int kind;
    double v;
    double *grad;
    size_t n;
    mp_entry *ent;
    size_t nent, cap;
};

gr_mparam *gr_mparam_scalar(double v)
{
    gr_mparam *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->kind = MP_SCALAR;
    p->v = v;
    return p;
}

gr_mparam *gr_mparam_gradient(const double *v, size_t n)
{
    if (n < 1) return NULL;
    gr_mparam *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->kind = MP_GRADIENT;
    p->grad = malloc(n * sizeof *p->grad);
    if (!p->grad) {
        free(p);
        return NULL;
    }
    memcpy(p->grad, v, n * sizeof *v);
    p->n = n;
    return p;
}

gr_mparam *gr_mparam_filters(void)
{
    gr_mparam *p = calloc(1, sizeof *p);
    if (p) p->kind = MP_FILTERS;
    return p;
}

void gr_mparam_destroy(gr_mparam **pp)
{
    if (!pp || !*pp) return;
    gr_mparam *p = *pp;
    free(p->grad);
    for (size_t i = 0; i < p->nent; i++) {
        free(p->ent[i].filter);
        gr_mparam_destroy(&p->ent[i].value);
    }
    free(p->ent);
    free(p);
    *pp = NULL;
}

int gr_mparam_filters_add(gr_mparam *list, const char *filter, gr_mparam *value)
{
    int rc = 0;
    if (!list || list->kind != MP_FILTERS || !value || value->kind == MP_FILTERS) {
        rc = gr_seterr(GR_EINVAL, "mparam: a filter list holds scalars or gradients only");
        goto fail;
    }
    if (list->nent == list->cap) {
        size_t cap = list->cap ? 2 * list->cap : 4;
        mp_entry *e = realloc(list->ent, cap * sizeof *e);
        if (!e) {
            rc = gr_seterr(GR_ENOMEM, "mparam: out of memory");
            goto fail;
        }
        list->ent = e;
        list->cap = cap;
    }
    char *f = NULL;
    if (filter && strcmp(filter, "*") != 0 && !(f = strdup(filter))) {
        rc = gr_seterr(GR_ENOMEM, "mparam: out of memory");
        goto fail;
    }
    list->ent[list->nent].filter = f;
    list->ent[list->nent].value = value;
    list->nent++;
    return 0;
fail:
    gr_mparam_destroy(&value);
    return rc;
}

static int json_number(const gr_json *v, const char *what, const char *where, double *out)
{
    if (v->type != GR_JSON_NUM)
        return gr_seterr(GR_EINVAL, "%s%s: expected a number, got %s", what, where,
                         gr_json_type_name(v->type));
    if (!isfinite(v->num)) return gr_seterr(GR_EINVAL, "%s%s: number is not finite", what, where);
    *out = v->num;
    return 0;
}

/* A scalar or a gradient (non-empty list of numbers). */
static gr_mparam *value_from_json(const gr_json *v, const char *what, const char *where)
{
    double x = 0;
    if (v->type == GR_JSON_NUM) {
        if (json_number(v, what, where, &x)) return NULL;
        gr_mparam *p = gr_mparam_scalar(x);
        if (!p) gr_seterr(GR_ENOMEM, "mparam: out of memory");
        return p;
    }
    if (v->type != GR_JSON_ARR || v->len == 0) {
        gr_seterr(GR_EINVAL, "%s%s: expected a number or a non-empty list of numbers, got %s", what,
                  where, v->type == GR_JSON_ARR ? "an empty list" : gr_json_type_name(v->type));
        return NULL;
    }
    double *g = malloc(v->len * sizeof *g);
    if (!g) {
        gr_seterr(GR_ENOMEM, "mparam: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < v->len; i++) {
        char w2[96];
        snprintf(w2, sizeof w2, "%s[%zu]", where, i);
        if (json_number(v->items[i], what, w2, &g[i])) {
            free(g);
            return NULL;
        }
    }
    gr_mparam *p = gr_mparam_gradient(g, v->len);
    free(g);
    if (!p) gr_seterr(GR_ENOMEM, "mparam: out of memory");
    return p;
}

gr_mparam *gr_mparam_from_json(const gr_json *v, const char *what)
{
    const char *w = what ? what : "parameter";
    if (!v) {
        gr_seterr(GR_EINVAL, "%s: missing value", w);
        return NULL;
    }
    if (v->type != GR_JSON_ARR || v->len == 0 || v->items[0]->type != GR_JSON_OBJ)
        return value_from_json(v, w, "");
    /* A list of {filter, value} objects. */
    gr_mparam *list = gr_mparam_filters();
    if (!list) {
        gr_seterr(GR_ENOMEM, "mparam: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < v->len; i++) {
        const gr_json *e = v->items[i];
        char where[64];
        snprintf(where, sizeof where, "[%zu]", i);
        if (e->type != GR_JSON_OBJ) {
            gr_seterr(GR_EINVAL, "%s%s: a list of {filter, value} entries cannot mix in %s", w,
                      where, gr_json_type_name(e->type));
            goto fail;
        }
        for (size_t j = 0; j < e->len; j++)
            if (strcmp(e->keys[j], "filter") != 0 && strcmp(e->keys[j], "value") != 0) {
                gr_seterr(GR_EINVAL, "%s%s: unknown key '%s' (expected filter and value)", w, where,
                          e->keys[j]);
                goto fail;
            }
        const gr_json *f = gr_json_get(e, "filter"), *val = gr_json_get(e, "value");
        if (f && f->type != GR_JSON_STR) {
            gr_seterr(GR_EINVAL, "%s%s.filter: expected a string, got %s", w, where,
                      gr_json_type_name(f->type));
            goto fail;
        }
        if (f && strlen(f->str) != f->len) {
            gr_seterr(GR_EINVAL, "%s%s.filter: contains a NUL byte", w, where);
            goto fail;
        }
        if (!val) {
            gr_seterr(GR_EINVAL, "%s%s: missing 'value'", w, where);
            goto fail;
        }
        char vwhere[80];
        snprintf(vwhere, sizeof vwhere, "%s.value", where);
        gr_mparam *pv = value_from_json(val, w, vwhere);
        if (!pv) goto fail;
        if (gr_mparam_filters_add(list, f ? f->str : NULL, pv)) goto fail;
    }
    return list;
fail:
    gr_mparam_destroy(&list);
    return NULL;
}

double gr_mparam_interp(const double *v, size_t n, double t)
{
    if (!(t > 0.0)) t = 0.0; /* also NaN */
    if (t > 1.0) t = 1.0;
    double s = t * (double)(n - 1), fl = floor(s);
    size_t i = (size_t)fl;
    if (i >= n - 1) return v[n - 1];
    double f = s - fl;
    return (1.0 - f) * v[i] + f * v[i + 1];
}

int gr_mparam_eval(const gr_mparam *p, const char *tensor, double t, double *out)
{
    switch (p->kind) {
    case MP_SCALAR:
        *out = p->v;
        return 0;
    case MP_GRADIENT:
        *out = gr_mparam_interp(p->grad, p->n, t);
        return 0;
    default:
        for (size_t i = 0; i < p->nent; i++)
            if (!p->ent[i].filter || (tensor && strstr(tensor, p->ent[i].filter)))
                return gr_mparam_eval(p->ent[i].value, tensor, t, out);
        return gr_seterr(GR_ENOTFOUND, "mparam: no filter matches tensor '%s'",
                         tensor ? tensor : "?");
    }
}

int gr_mparam_eval_tensor(const gr_mparam *p, const char *tensor, long num_layers, double *out)
{
    return gr_mparam_eval(p, tensor, gr_mparam_t(tensor, num_layers), out);
}

static int is_layer_container(const char *c, size_t len)
{
    static const char *const names[] = {"layers", "layer", "h", "blocks", "block"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strlen(names[i]) == len && !memcmp(c, names[i], len)) return 1;
    return 0;
}

int gr_mparam_layer(const char *tensor, long *layer)
{
    if (!tensor) return 0;
    const char *prev = NULL;
    size_t prevlen = 0;
    const char *c = tensor;
    for (;;) {
        const char *dot = strchr(c, '.');
        size_t len = dot ? (size_t)(dot - c) : strlen(c);
        if (prev && is_layer_container(prev, prevlen) && len > 0 && len <= MAX_LAYER_DIGITS &&
            strspn(c, "0123456789") >= len) {
            long v = 0;
            for (size_t i = 0; i < len; i++) v = v * 10 + (c[i] - '0');
            *layer = v;
            return 1;
        }
        if (!dot) return 0;
        prev = c;
        prevlen = len;
        c = dot + 1;
    }
}

double gr_mparam_t(const char *tensor, long num_layers)
{
    long l;
    if (!gr_mparam_layer(tensor, &l)) return 0.0;
    if (num_layers <= 1) return 1.0;
    double t = (double)l / (double)(num_layers - 1);
    return t > 1.0 ? 1.0 : t;
}

long gr_mparam_count_layers(const char *const *names, size_t n)
{
    long most = -1, l;
    for (size_t i = 0; i < n; i++)
        if (gr_mparam_layer(names[i], &l) && l > most) most = l;
    return most + 1;
}
