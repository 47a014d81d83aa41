/* gr_pipeline: YAML pipeline files to a checked, expanded DAG of stages.
 *
 * Phases: YAML -> gr_json tree (lines kept) -> --set overrides -> ${var}
 * substitution -> raw stages (one per file entry, plus implied fetches) ->
 * reference check and topological sort -> matrix expansion (own matrix,
 * natural join with mapped upstreams, reduce over list inputs) -> parameter
 * check per variant. Everything from the file is hostile: sizes are capped,
 * aliases are expanded under a node budget, recursion depth is bounded. */
#include "gr_pipeline.h"
#include "gr_err.h"
#include "gr_jsonb.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#define PL_MAX_DEPTH      64      /* YAML nesting */
#define PL_MAX_NODES      1000000 /* YAML nodes after alias expansion */
#define PL_MAX_EDGES      4000000 /* references after expansion */
#define PL_MAX_ID         64      /* user stage ids */
#define PL_MAX_RETRIES    100
#define PL_MAX_PRIORITY   1000000
#define PL_FETCH_HEX      12  /* hex digits of sha256(uri) in implied fetch ids */
#define PL_MAX_VARIANT_ID 400 /* task ids "<job>:<stage>" must fit the wire's 512 */
#define PL_SMALL_MAP      8   /* up to this many keys, duplicates are found by a scan */

/* ---------------------------------------------------------------- errors */

typedef struct pctx pctx;

/* "FILE:LINE: stage 'ID': message" (GR_EINVAL). */
static int perr(const pctx *P, int line, const char *stage, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ------------------------------------------------------- string hash map */

/* Open-addressing map from borrowed NUL-terminated keys to indices. */
typedef struct {
    const char **keys;
    size_t *vals;
    size_t cap, n;
} smap;

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static long smap_get(const smap *m, const char *key)
{
    if (!m->cap) return -1;
    for (size_t i = fnv1a(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i]) return -1;
        if (!strcmp(m->keys[i], key)) return (long)m->vals[i];
    }
}

/* Adds key -> val; returns 1 if key was already there (map unchanged), 0 if
 * added, GR_ENOMEM. */
static int smap_put(smap *m, const char *key, size_t val)
{
    if (smap_get(m, key) >= 0) return 1;
    if ((m->n + 1) * 2 > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 64;
        const char **nk = calloc(nc, sizeof *nk);
        size_t *nv = calloc(nc, sizeof *nv);
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return gr_seterr(GR_ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i]) continue;
            size_t j = fnv1a(m->keys[i]) & (nc - 1);
            while (nk[j]) j = (j + 1) & (nc - 1);
            nk[j] = m->keys[i];
            nv[j] = m->vals[i];
        }
        free(m->keys);
        free(m->vals);
        m->keys = nk;
        m->vals = nv;
        m->cap = nc;
    }
    size_t j = fnv1a(key) & (m->cap - 1);
    while (m->keys[j]) j = (j + 1) & (m->cap - 1);
    m->keys[j] = key;
    m->vals[j] = val;
    m->n++;
    return 0;
}

static void smap_free(smap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------- contexts */

typedef struct {
    size_t out;       /* index into the output stages */
    gr_json *binding; /* object: variable -> value */
} variant;

typedef struct vindex vindex;

typedef struct {
    char *id;
    int line;
    const gr_op *op;
    gr_json *params; /* object */
    gr_json *matrix; /* object of arrays, or NULL */
    gr_json *after;  /* array of strings, or NULL */
    int after_line;
    int retries, priority;
    double timeout;
    size_t *up; /* raw stages referenced (inputs and after), each once */
    size_t nup, capup;
    int mark; /* topological sort: 0 new, 1 on the stack, 2 done */
    variant *var;
    size_t nvar, capvar;
    char **vnames; /* variable names of the variants, sorted */
    size_t nvn;
    vindex *ix; /* indexes of the variants, one per set of shared names,
                   built on first use once all variants exist */
    size_t nix;
} rstage;

struct pctx {
    const char *file; /* for messages */
    char *dir;        /* absolute directory of the file, for file:// */
    rstage *rs;
    size_t nrs, caprs;
    smap ids;       /* raw stage id -> index */
    smap outids;    /* output stage id -> index */
    smap vars;      /* variable -> index in vars:, when it has many */
    size_t *upseen; /* linking: upseen[u] == ri + 1 once u is in rs[ri].up */
    size_t *order;  /* raw stages in topological order */
    size_t norder;
    gr_pipeline *pl; /* output */
    size_t capout;
    size_t edges;
    size_t nodes; /* YAML nodes converted */
};

/* Sets code with the message on one line: control characters quoted from
 * the file or the command line are written as \n, \t, \xNN. */
static int seterr_line(int code, const char *msg)
{
    char out[2048];
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)msg; *c && o + 5 < sizeof out; c++) {
        if (*c >= 0x20 && *c != 0x7f)
            out[o++] = (char)*c;
        else if (*c == '\n')
            out[o++] = '\\', out[o++] = 'n';
        else if (*c == '\t')
            out[o++] = '\\', out[o++] = 't';
        else
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", *c);
    }
    out[o] = 0;
    return gr_seterr(code, "%s", out);
}

static int perr(const pctx *P, int line, const char *stage, const char *fmt, ...)
{
    char msg[1024], full[1600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *f = P->file ? P->file : "pipeline";
    if (stage)
        snprintf(full, sizeof full, "%s:%d: stage '%s': %s", f, line, stage, msg);
    else
        snprintf(full, sizeof full, "%s:%d: %s", f, line, msg);
    return seterr_line(GR_EINVAL, full);
}

/* Keeps a message from a lower layer but adds file, line and stage. */
static int perr_wrap(const pctx *P, int line, const char *stage, int code)
{
    if (code == GR_ENOMEM) return code;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", gr_errmsg());
    return perr(P, line, stage, "%s", msg);
}

/* ------------------------------------------------------------ YAML -> JSON */

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) gr_seterr(GR_ENOMEM, "out of memory");
    return d;
}

static int streq_any(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list)) return 1;
    return 0;
}

static int all_digits(const char *s, const char *digits)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!strchr(digits, *s)) return 0;
    return 1;
}

/* Plain scalar resolution after the YAML 1.2 core schema. Returns a new
 * node, or NULL (error set) for values JSON cannot hold. */
static gr_json *plain_scalar(const pctx *P, const char *s, size_t n, int line)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    static const char *const nonfinite[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                            "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                            ".NaN",  ".NAN",  NULL};
    if (strlen(s) != n) return gr_jsonb_strn(s, n); /* holds a NUL: a string */
    if (streq_any(s, nulls)) return gr_jsonb_null();
    if (streq_any(s, trues)) return gr_jsonb_bool(1);
    if (streq_any(s, falses)) return gr_jsonb_bool(0);
    if (streq_any(s, nonfinite)) {
        perr(P, line, NULL, "value '%s' has no JSON form (infinite or NaN)", s);
        return NULL;
    }
    const char *d = s + (*s == '-' || *s == '+');
    if (all_digits(d, "0123456789")) {
        errno = 0;
        char *end;
        long long v = strtoll(s, &end, 10);
        if (!errno && !*end) return gr_jsonb_int(v);
        return gr_jsonb_num(strtod(s, NULL)); /* beyond int64: a double */
    }
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'o') && s[2] &&
        all_digits(s + 2, s[1] == 'x' ? "0123456789abcdefABCDEF" : "01234567")) {
        errno = 0;
        char *end;
        unsigned long long v = strtoull(s + 2, &end, s[1] == 'x' ? 16 : 8);
        if (!errno && !*end && v <= (unsigned long long)INT64_MAX) return gr_jsonb_int((int64_t)v);
        perr(P, line, NULL, "integer '%s' does not fit in 64 bits", s);
        return NULL;
    }
    /* float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
    const char *p = d;
    size_t ip = 0, fp = 0;
    while (*p >= '0' && *p <= '9') p++, ip++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++, fp++;
    }
    int is_float = ip + fp > 0;
    if (is_float && (*p == 'e' || *p == 'E')) {
        p++;
        if (*p == '-' || *p == '+') p++;
        if (!(*p >= '0' && *p <= '9')) is_float = 0;
        while (*p >= '0' && *p <= '9') p++;
    }
    if (is_float && !*p) {
        double v = strtod(s, NULL);
        if (!isfinite(v)) {
            perr(P, line, NULL, "number '%s' is out of range", s);
            return NULL;
        }
        gr_json *j = gr_jsonb_num(v);
        if (j) j->is_int = 0, j->i = 0; /* 1.0 stays a float, as the JSON parser reads it */
        return j;
    }
    return gr_jsonb_strn(s, n);
}

static gr_json *yaml_node_json(pctx *P, yaml_document_t *doc, yaml_node_t *nd, int depth)
{
    if (!nd) {
        gr_seterr(GR_EINVAL, "%s: broken YAML document", P->file ? P->file : "pipeline");
        return NULL;
    }
    int line = (int)nd->start_mark.line + 1;
    if (depth > PL_MAX_DEPTH) {
        perr(P, line, NULL, "YAML nested deeper than %d levels (or a recursive alias)",
             PL_MAX_DEPTH);
        return NULL;
    }
    if (++P->nodes > PL_MAX_NODES) {
        perr(P, line, NULL, "YAML expands to more than %d nodes (aliases?)", PL_MAX_NODES);
        return NULL;
    }
    gr_json *j = NULL;
    switch (nd->type) {
    case YAML_SCALAR_NODE: {
        const char *s = (const char *)nd->data.scalar.value;
        size_t n = nd->data.scalar.length;
        if (nd->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
            j = plain_scalar(P, s, n, line);
        else
            j = gr_jsonb_strn(s, n);
        break;
    }
    case YAML_SEQUENCE_NODE: {
        /* built whole (gr_jsonb_arr_take): pushing one by one is quadratic */
        size_t n = (size_t)(nd->data.sequence.items.top - nd->data.sequence.items.start), k = 0;
        gr_json **items = n ? calloc(n, sizeof *items) : NULL;
        if (n && !items) {
            gr_seterr(GR_ENOMEM, "out of memory");
            return NULL;
        }
        for (yaml_node_item_t *it = nd->data.sequence.items.start; it < nd->data.sequence.items.top;
             it++) {
            gr_json *v = yaml_node_json(P, doc, yaml_document_get_node(doc, *it), depth + 1);
            if (!v) {
                while (k > 0) gr_json_free(items[--k]);
                free(items);
                return NULL;
            }
            items[k++] = v;
        }
        if (!(j = gr_jsonb_arr_take(items, k))) return NULL;
        break;
    }
    case YAML_MAPPING_NODE: {
        /* built whole (gr_jsonb_obj_take), duplicates found with a hash map
         * when there are many keys: a stages: mapping may hold 10^5 */
        size_t n = (size_t)(nd->data.mapping.pairs.top - nd->data.mapping.pairs.start), k = 0;
        char **keys = n ? calloc(n, sizeof *keys) : NULL;
        gr_json **items = n ? calloc(n, sizeof *items) : NULL;
        smap seen = {0};
        if (n && (!keys || !items)) {
            free(keys);
            free(items);
            gr_seterr(GR_ENOMEM, "out of memory");
            return NULL;
        }
        for (yaml_node_pair_t *pr = nd->data.mapping.pairs.start; pr < nd->data.mapping.pairs.top;
             pr++) {
            yaml_node_t *kn = yaml_document_get_node(doc, pr->key);
            if (!kn || kn->type != YAML_SCALAR_NODE) {
                perr(P, kn ? (int)kn->start_mark.line + 1 : line, NULL,
                     "mapping keys must be plain strings");
                goto map_fail;
            }
            const char *key = (const char *)kn->data.scalar.value;
            int kline = (int)kn->start_mark.line + 1;
            if (strlen(key) != kn->data.scalar.length) {
                perr(P, kline, NULL, "mapping key holds a NUL byte");
                goto map_fail;
            }
            if (!strcmp(key, "<<") && kn->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
                perr(P, kline, NULL,
                     "YAML merge keys (<<) are not supported; repeat the keys or use vars:");
                goto map_fail;
            }
            if (!(keys[k] = xstrdup(key))) goto map_fail;
            int dup = 0;
            if (n <= PL_SMALL_MAP) {
                for (size_t i = 0; i < k && !dup; i++) dup = !strcmp(keys[i], key);
            } else if ((dup = smap_put(&seen, keys[k], k)) < 0) {
                free(keys[k]);
                goto map_fail;
            }
            if (dup) {
                free(keys[k]);
                perr(P, kline, NULL, "duplicate key '%s'", key);
                goto map_fail;
            }
            gr_json *v = yaml_node_json(P, doc, yaml_document_get_node(doc, pr->value), depth + 1);
            if (!v) {
                free(keys[k]);
                goto map_fail;
            }
            /* a member's line is its key's line (a block value starts below) */
            v->line = kline;
            items[k++] = v;
        }
        smap_free(&seen);
        if (!(j = gr_jsonb_obj_take(keys, items, k))) return NULL;
        break;
    map_fail:
        smap_free(&seen);
        while (k > 0) {
            k--;
            free(keys[k]);
            gr_json_free(items[k]);
        }
        free(keys);
        free(items);
        return NULL;
    }
    default:
        perr(P, line, NULL, "empty YAML node");
        return NULL;
    }
    if (j) j->line = line;
    return j;
}

static gr_json *yaml_to_json(pctx *P, const char *text, size_t len)
{
    yaml_parser_t yp;
    yaml_document_t doc, doc2;
    gr_json *root = NULL;
    if (!yaml_parser_initialize(&yp)) {
        gr_seterr(GR_ENOMEM, "out of memory starting the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    if (!yaml_parser_load(&yp, &doc)) {
        perr(P, (int)yp.problem_mark.line + 1, NULL, "YAML syntax: %s%s%s",
             yp.problem ? yp.problem : "error", yp.context ? " " : "",
             yp.context ? yp.context : "");
        yaml_parser_delete(&yp);
        return NULL;
    }
    yaml_node_t *top = yaml_document_get_root_node(&doc);
    if (!top) {
        perr(P, 1, NULL, "empty file: a pipeline needs 'stages:'");
        goto out;
    }
    root = yaml_node_json(P, &doc, top, 0);
    if (!root) goto out;
    if (!yaml_parser_load(&yp, &doc2)) {
        perr(P, (int)yp.problem_mark.line + 1, NULL, "YAML syntax: %s",
             yp.problem ? yp.problem : "error");
        gr_json_free(root);
        root = NULL;
        goto out;
    }
    int more = yaml_document_get_root_node(&doc2) != NULL;
    int l2 = more ? (int)yaml_document_get_root_node(&doc2)->start_mark.line + 1 : 0;
    yaml_document_delete(&doc2);
    if (more) {
        perr(P, l2, NULL, "more than one YAML document; a pipeline file holds one");
        gr_json_free(root);
        root = NULL;
    }
out:
    yaml_document_delete(&doc);
    yaml_parser_delete(&yp);
    return root;
}

/* ------------------------------------------------------------- utilities */

static const char *const stage_keys[] = {"op",       "matrix", "retries", "timeout",
                                         "priority", "after",  NULL};

static int valid_stage_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return n >= 1 && n <= PL_MAX_ID;
}

int gr_is_artifact_id(const char *s)
{
    if (!s || strncmp(s, "sha256:", 7)) return 0;
    s += 7;
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f'))) return 0;
    return n == 64;
}

static int is_uri(const char *s)
{
    return !strncmp(s, "file://", 7) || !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8) ||
           !strncmp(s, "hf://", 5);
}

int gr_param_input_kind(const gr_op *op, const char *name)
{
    if (!op || !name) return 0;
    for (const gr_param *p = op->params; p && p->name; p++)
        if (!strcmp(p->name, name))
            return p->type == GR_P_INPUT || p->type == GR_P_INPUTS ? (int)p->type : 0;
    return 0;
}

/* Display form of a matrix value inside a variant id. */
static int put_value(gr_buf *b, const gr_json *v)
{
    if (v->type == GR_JSON_STR) return gr_buf_append(b, v->str ? v->str : "", v->len);
    return gr_jsonb_write(b, v);
}

/* ------------------------------------------------------------ overrides */

/* Whether s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
static int utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            k = 2, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF)
            k = 3, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4)
            k = 4, cp = c & 0x07;
        else
            return 0;
        if (n - i < k) return 0;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k;
    }
    return 1;
}

/* Whether every number in j is finite (JSON parsers may read 1e999 as inf). */
static int all_finite(const gr_json *j, int depth)
{
    if (depth > PL_MAX_DEPTH) return 0;
    if (j->type == GR_JSON_NUM) return isfinite(j->num);
    for (size_t i = 0; (j->type == GR_JSON_ARR || j->type == GR_JSON_OBJ) && i < j->len; i++)
        if (!all_finite(j->items[i], depth + 1)) return 0;
    return 1;
}

static int apply_set(pctx *P, gr_json *root, const char *set)
{
    const char *eq = strchr(set, '=');
    if (!eq || eq == set)
        return gr_seterr(GR_EINVAL, "--set %s: expected KEY=VALUE (e.g. stage.param=0.5)", set);
    if (!utf8_ok((const unsigned char *)set, strlen(set)))
        return gr_seterr(GR_EINVAL, "--set: '%s' is not valid UTF-8", set);
    for (const char *c = set; c < eq; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-' || *c == '.'))
            return gr_seterr(
                GR_EINVAL, "--set %s: a key is made of names (A-Z a-z 0-9 _ -) joined by '.'", set);
    size_t klen = (size_t)(eq - set);
    char *key = strndup(set, klen);
    if (!key) return gr_seterr(GR_ENOMEM, "out of memory");
    const char *vs = eq + 1;
    gr_json *val = gr_json_parse(vs, strlen(vs), NULL);
    int rc = GR_ENOMEM;
    if (val && !all_finite(val, 0)) {
        rc = gr_seterr(GR_EINVAL, "--set %s: number out of range", set);
        goto out;
    }
    if (!val) {
        gr_clearerr();
        val = gr_jsonb_str(vs);
    }
    if (!val) goto out;
    char *dot = strchr(key, '.');
    if (!dot) {
        if (!strcmp(key, "name") || !strcmp(key, "priority")) {
            rc = gr_jsonb_set(root, key, val);
            val = NULL;
            goto out;
        }
        gr_json *vars = (gr_json *)gr_json_get(root, "vars");
        if (!vars || vars->type != GR_JSON_OBJ || !gr_json_get(vars, key)) {
            rc = gr_seterr(GR_EINVAL, "--set %s: no variable '%s' (declare it under vars:)", set,
                           key);
            goto out;
        }
        rc = gr_jsonb_set(vars, key, val);
        val = NULL;
        goto out;
    }
    *dot = 0;
    const char *sid = key, *rest = dot + 1;
    gr_json *stages = (gr_json *)gr_json_get(root, "stages");
    gr_json *st = (gr_json *)gr_json_get(stages, sid);
    if (!st || st->type != GR_JSON_OBJ) {
        rc = gr_seterr(GR_EINVAL, "--set %s: no stage '%s'", set, sid);
        goto out;
    }
    if (!*rest) {
        rc = gr_seterr(GR_EINVAL, "--set %s: no parameter name after '%s.'", set, sid);
        goto out;
    }
    gr_json *mx = (gr_json *)gr_json_get(st, "matrix");
    if (!strncmp(rest, "matrix.", 7)) {
        const char *var = rest + 7;
        if (!*var) {
            rc = gr_seterr(GR_EINVAL, "--set %s: no variable name after 'matrix.'", set);
            goto out;
        }
        if (!mx) {
            gr_json *nm = gr_jsonb_obj();
            if (!nm || gr_jsonb_set(st, "matrix", nm)) goto out;
            mx = (gr_json *)gr_json_get(st, "matrix");
            mx->line = st->line;
        } else if (mx->type != GR_JSON_OBJ) {
            rc = perr(P, mx->line, sid, "matrix must be a mapping of variable: [values]");
            goto out;
        }
        val->line = mx->line;
        rc = gr_jsonb_set(mx, var, val);
        val = NULL;
        /* a matrix variable replaces a fixed value of the same parameter */
        if (!rc) gr_jsonb_del(st, var);
        goto out;
    }
    if (!strcmp(rest, "matrix")) {
        rc = gr_seterr(GR_EINVAL, "--set %s: set one variable with %s.matrix.NAME=[...]", set, sid);
        goto out;
    }
    const gr_json *old = gr_json_get(st, rest);
    val->line = old ? old->line : st->line;
    rc = gr_jsonb_set(st, rest, val);
    val = NULL;
    if (!rc && mx && mx->type == GR_JSON_OBJ) {
        gr_jsonb_del(mx, rest); /* pin a matrix variable */
        if (!mx->len) gr_jsonb_del(st, "matrix");
    }
out:
    gr_json_free(val);
    free(key);
    return rc;
}

/* ------------------------------------------------------------ variables */

static int subst(pctx *P, const gr_json *vars, gr_json **slot, const char *sid, int depth);

/* vars[name], through P->vars (name -> member index) when vars is large. */
static const gr_json *var_get(const pctx *P, const gr_json *vars, const char *name)
{
    if (!P->vars.n) return gr_json_get(vars, name);
    long i = smap_get(&P->vars, name);
    return i < 0 ? NULL : vars->items[i];
}

static int subst_string(pctx *P, const gr_json *vars, gr_json **slot, const char *sid)
{
    gr_json *j = *slot;
    const char *s = j->str ? j->str : "";
    if (!strstr(s, "${")) return 0;
    size_t n = j->len;
    /* whole value "${v}": takes v's value and type */
    if (n > 3 && s[0] == '$' && s[1] == '{' && s[n - 1] == '}' && !memchr(s + 2, '}', n - 3) &&
        !memchr(s + 2, '$', n - 3)) {
        char name[256];
        if (n - 3 >= sizeof name) return perr(P, j->line, sid, "variable name too long");
        memcpy(name, s + 2, n - 3);
        name[n - 3] = 0;
        const gr_json *v = var_get(P, vars, name);
        if (!v)
            return perr(P, j->line, sid, "unknown variable '${%s}' (declare it under vars:)", name);
        gr_json *c = gr_jsonb_copy(v);
        if (!c) return GR_ENOMEM;
        c->line = j->line;
        gr_json_free(j);
        *slot = c;
        return 0;
    }
    gr_buf b = {0};
    for (size_t i = 0; i < n;) {
        if (s[i] == '$' && i + 2 < n && s[i + 1] == '$' && s[i + 2] == '{') {
            gr_buf_puts(&b, "${");
            i += 3;
            continue;
        }
        if (s[i] == '$' && i + 1 < n && s[i + 1] == '{') {
            const char *end = memchr(s + i + 2, '}', n - i - 2);
            if (!end) {
                gr_buf_free(&b);
                return perr(P, j->line, sid,
                            "unterminated '${' in \"%s\" (write $${ for a literal)", s);
            }
            size_t nl = (size_t)(end - (s + i + 2));
            char name[256];
            if (nl >= sizeof name) {
                gr_buf_free(&b);
                return perr(P, j->line, sid, "variable name too long");
            }
            memcpy(name, s + i + 2, nl);
            name[nl] = 0;
            const gr_json *v = var_get(P, vars, name);
            if (!v) {
                gr_buf_free(&b);
                return perr(P, j->line, sid, "unknown variable '${%s}' (declare it under vars:)",
                            name);
            }
            if (v->type == GR_JSON_ARR || v->type == GR_JSON_OBJ) {
                gr_buf_free(&b);
                return perr(P, j->line, sid,
                            "variable '%s' is a %s; only a whole value \"${%s}\" can use it", name,
                            gr_json_type_name(v->type), name);
            }
            put_value(&b, v);
            i += nl + 3;
            continue;
        }
        gr_buf_putc(&b, s[i++]);
    }
    if (b.oom) {
        gr_buf_free(&b);
        return GR_ENOMEM;
    }
    gr_json *c = gr_jsonb_strn(b.data ? b.data : "", b.len);
    gr_buf_free(&b);
    if (!c) return GR_ENOMEM;
    c->line = j->line;
    gr_json_free(j);
    *slot = c;
    return 0;
}

static int subst(pctx *P, const gr_json *vars, gr_json **slot, const char *sid, int depth)
{
    gr_json *j = *slot;
    if (depth > PL_MAX_DEPTH) return perr(P, j->line, sid, "value nested too deeply");
    if (j->type == GR_JSON_STR) return subst_string(P, vars, slot, sid);
    if (j->type == GR_JSON_ARR || j->type == GR_JSON_OBJ)
        for (size_t i = 0; i < j->len; i++) {
            int rc = subst(P, vars, &j->items[i], sid, depth + 1);
            if (rc) return rc;
        }
    return 0;
}

/* ------------------------------------------------------------ raw stages */

static int add_raw(pctx *P, rstage **out)
{
    if (P->nrs == P->caprs) {
        size_t nc = P->caprs ? P->caprs * 2 : 16;
        rstage *n = realloc(P->rs, nc * sizeof *n);
        if (!n) return gr_seterr(GR_ENOMEM, "out of memory");
        P->rs = n;
        P->caprs = nc;
    }
    *out = &P->rs[P->nrs++];
    memset(*out, 0, sizeof **out);
    return 0;
}

static int int_field(pctx *P, const gr_json *v, const char *sid, const char *what, long lo, long hi,
                     int *out)
{
    if (v->type != GR_JSON_NUM || !v->is_int || v->i < lo || v->i > hi)
        return perr(P, v->line, sid, "%s must be an integer from %ld to %ld", what, lo, hi);
    *out = (int)v->i;
    return 0;
}

static int build_raw(pctx *P, const char *sid, const gr_json *def, int top_priority)
{
    int line = def->line;
    if (!valid_stage_id(sid))
        return perr(P, line, NULL, "stage id '%s' must be 1 to %d characters from A-Z a-z 0-9 _ -",
                    sid, PL_MAX_ID);
    if (def->type != GR_JSON_OBJ)
        return perr(P, line, sid, "a stage must be a mapping with at least 'op:'");
    const gr_json *opv = gr_json_get(def, "op");
    if (!opv) return perr(P, line, sid, "missing 'op:'");
    if (opv->type != GR_JSON_STR) return perr(P, opv->line, sid, "'op' must be a string");
    const gr_op *op = gr_op_find(opv->str);
    if (!op) {
        gr_buf known = {0};
        for (size_t i = 0; gr_ops[i]; i++)
            gr_buf_printf(&known, "%s%s", i ? ", " : "", gr_ops[i]->name);
        int rc = perr(P, opv->line, sid, "unknown op '%s' (known: %s)", opv->str,
                      known.data ? known.data : "none");
        gr_buf_free(&known);
        return rc;
    }
    rstage *R = NULL;
    if (add_raw(P, &R)) return GR_ENOMEM;
    R->line = line;
    R->op = op;
    R->retries = GR_STAGE_DEFAULT_RETRIES;
    R->priority = top_priority;
    if (!(R->id = xstrdup(sid)) || !(R->params = gr_jsonb_obj())) return GR_ENOMEM;
    R->params->line = line;
    for (size_t i = 0; i < def->len; i++) {
        const char *k = def->keys[i];
        const gr_json *v = def->items[i];
        int rc = 0;
        if (!strcmp(k, "op")) continue;
        if (k[0] == '_')
            return perr(P, v->line, sid,
                        "parameter names starting with '_' are reserved for the runtime ('%s')", k);
        if (!strcmp(k, "retries"))
            rc = int_field(P, v, sid, "retries", 0, PL_MAX_RETRIES, &R->retries);
        else if (!strcmp(k, "priority"))
            rc = int_field(P, v, sid, "priority", -PL_MAX_PRIORITY, PL_MAX_PRIORITY, &R->priority);
        else if (!strcmp(k, "timeout")) {
            if (v->type != GR_JSON_NUM || !(v->num >= 0) || !isfinite(v->num))
                return perr(P, v->line, sid, "timeout must be a number of seconds >= 0");
            R->timeout = v->num;
        } else if (!strcmp(k, "after")) {
            R->after_line = v->line;
            if (v->type == GR_JSON_STR) {
                if (!(R->after = gr_jsonb_arr()) || gr_jsonb_push(R->after, gr_jsonb_copy(v)))
                    return GR_ENOMEM;
            } else {
                if (v->type != GR_JSON_ARR) rc = 1;
                for (size_t a = 0; !rc && a < v->len; a++)
                    if (v->items[a]->type != GR_JSON_STR) rc = 1;
                if (rc) return perr(P, v->line, sid, "after must be a stage id or a list of them");
                if (!(R->after = gr_jsonb_copy(v))) return GR_ENOMEM;
            }
        } else if (!strcmp(k, "matrix")) {
            if (v->type != GR_JSON_OBJ || !v->len)
                return perr(P, v->line, sid,
                            "matrix must be a non-empty mapping of parameter: [values]");
            for (size_t m = 0; m < v->len; m++) {
                const gr_json *vals = v->items[m];
                const char *var = v->keys[m];
                if (vals->type != GR_JSON_ARR || !vals->len)
                    return perr(P, vals->line, sid,
                                "matrix variable '%s' must be a non-empty list of values", var);
                if (streq_any(var, stage_keys) || var[0] == '_')
                    return perr(P, vals->line, sid, "'%s' cannot be a matrix variable", var);
                if (gr_json_get(def, var))
                    return perr(P, vals->line, sid,
                                "'%s' is both a parameter and a matrix variable", var);
            }
            if (!(R->matrix = gr_jsonb_copy(v))) return GR_ENOMEM;
        } else {
            gr_json *c = gr_jsonb_copy(v);
            if (!c || gr_jsonb_set(R->params, k, c)) return GR_ENOMEM;
        }
        if (rc) return rc;
    }
    /* unknown parameters, with the line of the offending key */
    if (!op->open_params) {
        for (size_t i = 0; i < R->params->len; i++) {
            const char *k = R->params->keys[i];
            const gr_param *p = op->params;
            while (p && p->name && strcmp(p->name, k)) p++;
            if (!p || !p->name)
                return perr(P, R->params->items[i]->line, sid, "%s: unknown parameter '%s'",
                            op->name, k);
        }
        for (size_t m = 0; R->matrix && m < R->matrix->len; m++) {
            const char *k = R->matrix->keys[m];
            const gr_param *p = op->params;
            while (p && p->name && strcmp(p->name, k)) p++;
            if (!p || !p->name)
                return perr(P, R->matrix->items[m]->line, sid,
                            "%s: matrix variable '%s' is not a parameter of the op", op->name, k);
        }
    }
    return 0;
}

/* --------------------------------------------------------- URIs and refs */

static char *absolute_dir(const char *file)
{
    char cwd[4096];
    const char *slash = strrchr(file, '/');
    gr_buf b = {0};
    if (file[0] != '/') {
        if (!getcwd(cwd, sizeof cwd)) {
            gr_seterr(GR_EIO, "cannot read the working directory: %s", strerror(errno));
            return NULL;
        }
        gr_buf_puts(&b, cwd);
        if (slash) gr_buf_putc(&b, '/');
    }
    if (slash) gr_buf_append(&b, file, (size_t)(slash - file));
    if (!b.data) gr_buf_puts(&b, "/");
    if (b.oom) {
        gr_buf_free(&b);
        return NULL;
    }
    return gr_buf_take(&b);
}

static int fetch_id(const char *uri, char out[6 + PL_FETCH_HEX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_Digest(uri, strlen(uri), md, &mdlen, EVP_sha256(), NULL))
        return gr_seterr(GR_EIO, "sha256 failed");
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "fetch:", 6);
    for (int i = 0; i < PL_FETCH_HEX / 2; i++) {
        out[6 + 2 * i] = hex[md[i] >> 4];
        out[7 + 2 * i] = hex[md[i] & 15];
    }
    out[6 + PL_FETCH_HEX] = 0;
    return 0;
}

/* One reference string in an input parameter: URIs become implied fetch
 * stages (the string is replaced by the fetch stage's id). */
static int take_uri(pctx *P, size_t ri, gr_json *s, const char *param)
{
    const char *ref = s->str ? s->str : "";
    const char *sid = P->rs[ri].id;
    if (!strncmp(ref, "sha256:", 7)) {
        if (!gr_is_artifact_id(ref))
            return perr(P, s->line, sid,
                        "parameter '%s': '%s' is not an artifact id (sha256: and 64 lowercase hex "
                        "digits)",
                        param, ref);
        return 0;
    }
    if (!is_uri(ref)) {
        if (strstr(ref, "://"))
            return perr(P, s->line, sid,
                        "parameter '%s': unsupported URI '%s' (file://, http://, https://, hf://, "
                        "sha256:)",
                        param, ref);
        return 0; /* a stage id, checked later */
    }
    gr_buf url = {0};
    if (!strncmp(ref, "file://", 7) && ref[7] != '/') {
        if (!ref[7]) return perr(P, s->line, sid, "parameter '%s': empty file:// path", param);
        if (!P->dir)
            return perr(P, s->line, sid,
                        "parameter '%s': relative '%s' needs the pipeline's file name; write "
                        "file:///absolute/path",
                        param, ref);
        gr_buf_printf(&url, "file://%s/%s", P->dir, ref + 7);
    } else
        gr_buf_puts(&url, ref);
    if (url.oom) return GR_ENOMEM;
    char fid[6 + PL_FETCH_HEX + 1];
    int rc = fetch_id(url.data, fid);
    if (rc) goto out;
    if (smap_get(&P->ids, fid) < 0) {
        const gr_op *fop = gr_op_find("fetch");
        if (!fop) {
            rc = perr(P, s->line, sid,
                      "parameter '%s': '%s' needs the op 'fetch', which this build lacks", param,
                      ref);
            goto out;
        }
        rstage *F = NULL;
        if ((rc = add_raw(P, &F))) goto out;
        F->line = s->line;
        F->op = fop;
        F->retries = GR_STAGE_DEFAULT_RETRIES;
        F->priority = P->pl->priority;
        rc = GR_ENOMEM;
        if (!(F->id = xstrdup(fid)) || !(F->params = gr_jsonb_obj())) goto out;
        F->params->line = s->line;
        if (gr_jsonb_set(F->params, "url", gr_jsonb_str(url.data))) goto out;
        F->params->items[0]->line = s->line;
        if ((rc = smap_put(&P->ids, F->id, P->nrs - 1)) < 0) goto out;
    }
    char *ns = xstrdup(fid);
    rc = GR_ENOMEM;
    if (!ns) goto out;
    free(s->str);
    s->str = ns;
    s->len = strlen(ns);
    rc = 0;
out:
    gr_buf_free(&url);
    return rc;
}

/* Calls fn on every reference string of raw stage ri: input parameters and
 * the values of matrix variables that are input parameters. */
typedef int (*ref_fn)(pctx *P, size_t ri, gr_json *s, const char *param);

static int each_ref_in(pctx *P, size_t ri, gr_json *v, int kind, const char *param, ref_fn fn)
{
    if (kind == GR_P_INPUT) {
        if (v->type != GR_JSON_STR)
            return perr(P, v->line, P->rs[ri].id,
                        "%s: parameter '%s' must be a stage id or artifact reference",
                        P->rs[ri].op->name, param);
        return fn(P, ri, v, param);
    }
    if (v->type != GR_JSON_ARR)
        return perr(P, v->line, P->rs[ri].id,
                    "%s: parameter '%s' must be a list of stage ids or artifact references",
                    P->rs[ri].op->name, param);
    for (size_t i = 0; i < v->len; i++) {
        if (v->items[i]->type != GR_JSON_STR)
            return perr(P, v->items[i]->line, P->rs[ri].id,
                        "%s: parameter '%s' must be a list of stage ids or artifact references",
                        P->rs[ri].op->name, param);
        int rc = fn(P, ri, v->items[i], param);
        if (rc) return rc;
    }
    return 0;
}

static int each_ref(pctx *P, size_t ri, ref_fn fn)
{
    /* P->rs may move while fn adds fetch stages: re-read R each time */
    for (size_t i = 0; i < P->rs[ri].params->len; i++) {
        int kind = gr_param_input_kind(P->rs[ri].op, P->rs[ri].params->keys[i]);
        if (!kind) continue;
        int rc =
            each_ref_in(P, ri, P->rs[ri].params->items[i], kind, P->rs[ri].params->keys[i], fn);
        if (rc) return rc;
    }
    for (size_t m = 0; P->rs[ri].matrix && m < P->rs[ri].matrix->len; m++) {
        int kind = gr_param_input_kind(P->rs[ri].op, P->rs[ri].matrix->keys[m]);
        if (!kind) continue;
        gr_json *vals = P->rs[ri].matrix->items[m];
        for (size_t k = 0; k < vals->len; k++) {
            int rc = each_ref_in(P, ri, vals->items[k], kind, P->rs[ri].matrix->keys[m], fn);
            if (rc) return rc;
        }
    }
    return 0;
}

/* Adds u to rs[ri].up unless there. Stages are linked one after the other,
 * so a mark per stage (upseen) finds repeats in O(1). */
static int add_up(pctx *P, size_t ri, size_t u)
{
    rstage *R = &P->rs[ri];
    if (P->upseen[u] == ri + 1) return 0;
    if (R->nup == R->capup) {
        size_t nc = R->capup ? R->capup * 2 : 4;
        size_t *n = realloc(R->up, nc * sizeof *n);
        if (!n) return gr_seterr(GR_ENOMEM, "out of memory");
        R->up = n;
        R->capup = nc;
    }
    R->up[R->nup++] = u;
    P->upseen[u] = ri + 1;
    return 0;
}

static int link_ref(pctx *P, size_t ri, gr_json *s, const char *param)
{
    const char *ref = s->str ? s->str : "";
    if (gr_is_artifact_id(ref)) return 0;
    long u = smap_get(&P->ids, ref);
    if (u < 0)
        return perr(P, s->line, P->rs[ri].id,
                    "parameter '%s' names '%s', which is neither a stage of this pipeline nor an "
                    "artifact reference (sha256:, file://, https://, hf://)",
                    param, ref);
    return add_up(P, ri, (size_t)u);
}

static int link_after(pctx *P, size_t ri)
{
    gr_json *a = P->rs[ri].after;
    for (size_t i = 0; a && i < a->len; i++) {
        long u = smap_get(&P->ids, a->items[i]->str);
        if (u < 0)
            return perr(P, a->items[i]->line, P->rs[ri].id, "after: '%s' is not a stage",
                        a->items[i]->str);
        int rc = add_up(P, ri, (size_t)u);
        if (rc) return rc;
    }
    return 0;
}

/* Iterative depth-first topological sort in file order; reports a cycle with
 * the stages on it. */
static int toposort(pctx *P)
{
    size_t *stack = calloc(P->nrs + 1, sizeof *stack);
    size_t *pos = calloc(P->nrs + 1, sizeof *pos);
    P->order = calloc(P->nrs + 1, sizeof *P->order);
    int rc = 0;
    if (!stack || !pos || !P->order) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t s0 = 0; s0 < P->nrs; s0++) {
        if (P->rs[s0].mark) continue;
        size_t sp = 0;
        stack[sp] = s0;
        pos[sp++] = 0;
        P->rs[s0].mark = 1;
        while (sp) {
            rstage *R = &P->rs[stack[sp - 1]];
            if (pos[sp - 1] < R->nup) {
                size_t u = R->up[pos[sp - 1]++];
                if (P->rs[u].mark == 2) continue;
                if (P->rs[u].mark == 1) {
                    gr_buf cyc = {0};
                    size_t k = sp;
                    while (k > 0 && stack[k - 1] != u) k--;
                    /* stack[k-1] == u; the path u -> ... -> R -> u, written as
                     * consumer -> input */
                    for (size_t i = k - 1; i < sp; i++)
                        gr_buf_printf(&cyc, "%s -> ", P->rs[stack[i]].id);
                    gr_buf_puts(&cyc, P->rs[u].id);
                    rc = perr(P, P->rs[u].line, P->rs[u].id,
                              "dependency cycle: %s (each stage needs the next)",
                              cyc.data ? cyc.data : "");
                    gr_buf_free(&cyc);
                    goto out;
                }
                P->rs[u].mark = 1;
                stack[sp] = u;
                pos[sp++] = 0;
                continue;
            }
            R->mark = 2;
            P->order[P->norder++] = stack[--sp];
        }
    }
out:
    free(stack);
    free(pos);
    return rc;
}

/* ------------------------------------------------------------- expansion */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Key of binding b restricted to the sorted names[0..n). Missing names count
 * as a distinct marker so they never match a present value. */
static char *restrict_key(const gr_json *b, char *const *names, size_t n)
{
    gr_buf k = {0};
    for (size_t i = 0; i < n; i++) {
        const gr_json *v = gr_json_get(b, names[i]);
        if (v)
            gr_jsonb_write(&k, v);
        else
            gr_buf_putc(&k, '\x1e');
        gr_buf_putc(&k, '\x1f');
    }
    if (!k.data) gr_buf_puts(&k, "");
    if (k.oom) {
        gr_buf_free(&k);
        return NULL;
    }
    return gr_buf_take(&k);
}

typedef struct {
    char *key;
    size_t var;
} vkey;

static int vkey_cmp(const void *a, const void *b)
{
    const vkey *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->var < y->var ? -1 : x->var > y->var);
}

/* An index of U's variants by their restriction to `shared` names. */
struct vindex {
    vkey *k;
    size_t n;
    char **shared; /* borrowed from U->vnames */
    size_t nshared;
};

static void vindex_free(vindex *ix)
{
    for (size_t i = 0; i < ix->n; i++) free(ix->k[i].key);
    free(ix->k);
    free(ix->shared);
    memset(ix, 0, sizeof *ix);
}

/* Builds the index of U's variants keyed on the names U shares with
 * binding b. */
static int vindex_build(vindex *ix, const rstage *U, const gr_json *b)
{
    memset(ix, 0, sizeof *ix);
    if (U->nvn && !(ix->shared = calloc(U->nvn, sizeof *ix->shared))) goto oom;
    for (size_t i = 0; i < U->nvn; i++)
        if (gr_json_get(b, U->vnames[i])) ix->shared[ix->nshared++] = U->vnames[i];
    if (!(ix->k = calloc(U->nvar + 1, sizeof *ix->k))) goto oom;
    for (size_t v = 0; v < U->nvar; v++) {
        if (!(ix->k[v].key = restrict_key(U->var[v].binding, ix->shared, ix->nshared))) goto oom;
        ix->k[v].var = v;
        ix->n = v + 1;
    }
    qsort(ix->k, ix->n, sizeof *ix->k, vkey_cmp);
    return 0;
oom:
    vindex_free(ix);
    return gr_seterr(GR_ENOMEM, "out of memory");
}

/* The index of U's variants for binding b: U's cached one for the names b
 * shares with U, built on first use. Every variant of a stage has the same
 * names, so a stage needs one or two, and a stage expanded over n variants
 * of U costs O(n log n) instead of rebuilding an O(n) index n times. */
static int vindex_get(rstage *U, const gr_json *b, const vindex **out)
{
    size_t ns = 0;
    for (size_t i = 0; i < U->nvn; i++) ns += gr_json_get(b, U->vnames[i]) != NULL;
    for (size_t c = 0; c < U->nix; c++) {
        const vindex *ix = &U->ix[c];
        int same = ix->nshared == ns;
        for (size_t i = 0; same && i < ns; i++) same = gr_json_get(b, ix->shared[i]) != NULL;
        if (same) {
            *out = ix;
            return 0;
        }
    }
    vindex *n = realloc(U->ix, (U->nix + 1) * sizeof *n);
    if (!n) return gr_seterr(GR_ENOMEM, "out of memory");
    U->ix = n;
    int rc = vindex_build(&U->ix[U->nix], U, b);
    if (rc) return rc;
    *out = &U->ix[U->nix++];
    return 0;
}

/* Range [*lo, *hi) of index entries matching binding b. */
static int vindex_find(const vindex *ix, const gr_json *b, size_t *lo, size_t *hi)
{
    char *key = restrict_key(b, ix->shared, ix->nshared);
    if (!key) return gr_seterr(GR_ENOMEM, "out of memory");
    size_t l = 0, h = ix->n;
    while (l < h) {
        size_t m = l + (h - l) / 2;
        if (strcmp(ix->k[m].key, key) < 0)
            l = m + 1;
        else
            h = m;
    }
    size_t e = l;
    while (e < ix->n && !strcmp(ix->k[e].key, key)) e++;
    free(key);
    *lo = l;
    *hi = e;
    return 0;
}

typedef struct {
    gr_json **b;
    size_t n, cap;
} blist;

static int blist_push(blist *L, gr_json *b)
{
    if (!b) return GR_ENOMEM;
    if (L->n == L->cap) {
        size_t nc = L->cap ? L->cap * 2 : 8;
        gr_json **nb = realloc(L->b, nc * sizeof *nb);
        if (!nb) {
            gr_json_free(b);
            return gr_seterr(GR_ENOMEM, "out of memory");
        }
        L->b = nb;
        L->cap = nc;
    }
    L->b[L->n++] = b;
    return 0;
}

static void blist_free(blist *L)
{
    for (size_t i = 0; i < L->n; i++) gr_json_free(L->b[i]);
    free(L->b);
    memset(L, 0, sizeof *L);
}

/* Does v name a stage (not an artifact id)? Returns its raw index or -1. */
static long stage_ref(const pctx *P, const gr_json *v)
{
    if (v->type != GR_JSON_STR || gr_is_artifact_id(v->str)) return -1;
    return smap_get(&P->ids, v->str);
}

/* Natural join of the bindings in L with the variants of mapped upstream U. */
static int join(pctx *P, blist *L, rstage *U, const char *sid, int line)
{
    if (!U->nvn || !L->n) return 0;
    const vindex *ix;
    int rc = vindex_get(U, L->b[0], &ix);
    if (rc) return rc;
    blist out = {0};
    for (size_t i = 0; i < L->n; i++) {
        size_t lo, hi;
        if ((rc = vindex_find(ix, L->b[i], &lo, &hi))) goto done;
        for (size_t k = lo; k < hi; k++) {
            if (out.n >= GR_PIPELINE_MAX_STAGES) {
                rc = perr(P, line, sid, "expands to more than %d variants", GR_PIPELINE_MAX_STAGES);
                goto done;
            }
            gr_json *nb = gr_jsonb_copy(L->b[i]);
            const gr_json *ub = U->var[ix->k[k].var].binding;
            for (size_t m = 0; nb && m < ub->len; m++)
                if (gr_jsonb_set(nb, ub->keys[m], gr_jsonb_copy(ub->items[m]))) {
                    gr_json_free(nb);
                    nb = NULL;
                }
            if ((rc = blist_push(&out, nb))) goto done;
        }
    }
    blist_free(L);
    *L = out;
    out = (blist){0};
done:
    blist_free(&out);
    return rc;
}

static int vnames_of(const gr_json *b, char ***names, size_t *n)
{
    *n = 0;
    *names = NULL;
    if (!b->len) return 0;
    char **v = calloc(b->len, sizeof *v);
    if (!v) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < b->len; i++) {
        if (!(v[i] = xstrdup(b->keys[i]))) {
            for (size_t k = 0; k < i; k++) free(v[k]);
            free(v);
            return GR_ENOMEM;
        }
    }
    qsort(v, b->len, sizeof *v, cmp_str);
    *names = v;
    *n = b->len;
    return 0;
}

static int same_names(char *const *a, size_t na, const gr_json *b)
{
    if (na != b->len) return 0;
    for (size_t i = 0; i < na; i++)
        if (!gr_json_get(b, a[i])) return 0;
    return 1;
}

/* Appends the ids of U's variants consistent with binding b to arr (as
 * strings) and/or to the dependency list. */
typedef struct {
    char **ids;
    size_t n, cap;
    smap seen;
} deplist;

static int dep_add(pctx *P, deplist *D, const char *id)
{
    if (smap_get(&D->seen, id) >= 0) return 0;
    if (D->n == D->cap) {
        size_t nc = D->cap ? D->cap * 2 : 8;
        char **n = realloc(D->ids, nc * sizeof *n);
        if (!n) return gr_seterr(GR_ENOMEM, "out of memory");
        D->ids = n;
        D->cap = nc;
    }
    if (!(D->ids[D->n] = xstrdup(id))) return GR_ENOMEM;
    D->n++;
    if (++P->edges > PL_MAX_EDGES)
        return gr_seterr(GR_EINVAL, "%s: pipeline has more than %d references after expansion",
                         P->file ? P->file : "pipeline", PL_MAX_EDGES);
    return smap_put(&D->seen, D->ids[D->n - 1], D->n - 1) < 0 ? GR_ENOMEM : 0;
}

static void dep_free(deplist *D)
{
    for (size_t i = 0; i < D->n; i++) free(D->ids[i]);
    free(D->ids);
    smap_free(&D->seen);
}

/* Variants of U consistent with b (every shared variable equal). */
static int consistent(pctx *P, rstage *U, const gr_json *b, size_t **idx, size_t *n)
{
    *idx = NULL;
    *n = 0;
    const vindex *ix;
    int rc = vindex_get(U, b, &ix);
    if (rc) return rc;
    size_t lo, hi;
    if (!(rc = vindex_find(ix, b, &lo, &hi)) && hi > lo) {
        if (!(*idx = calloc(hi - lo, sizeof **idx))) rc = gr_seterr(GR_ENOMEM, "out of memory");
        for (size_t k = lo; !rc && k < hi; k++) (*idx)[(*n)++] = ix->k[k].var;
        /* keep the variants' own order (vkey_cmp sorts equal keys by
         * variant already, so this insertion sort only checks: O(n)) */
        for (size_t a = 1; !rc && a < *n; a++)
            for (size_t c = a; c > 0 && (*idx)[c - 1] > (*idx)[c]; c--) {
                size_t t = (*idx)[c];
                (*idx)[c] = (*idx)[c - 1];
                (*idx)[c - 1] = t;
            }
    }
    (void)P;
    return rc;
}

static int push_out(pctx *P, gr_stage *st)
{
    gr_pipeline *pl = P->pl;
    if (pl->nstages >= GR_PIPELINE_MAX_STAGES)
        return gr_seterr(GR_EINVAL, "%s: pipeline expands to more than %d stages",
                         P->file ? P->file : "pipeline", GR_PIPELINE_MAX_STAGES);
    if (pl->nstages == P->capout) {
        size_t nc = P->capout ? P->capout * 2 : 16;
        gr_stage *n = realloc(pl->stages, nc * sizeof *n);
        if (!n) return gr_seterr(GR_ENOMEM, "out of memory");
        pl->stages = n;
        P->capout = nc;
    }
    pl->stages[pl->nstages++] = *st;
    return 0;
}

static void stage_clear(gr_stage *s)
{
    free(s->id);
    free(s->op);
    gr_json_free(s->params);
    for (size_t i = 0; i < s->ndeps; i++) free(s->deps[i]);
    free(s->deps);
    memset(s, 0, sizeof *s);
}

/* Makes one concrete stage of raw stage R for binding b (owned by the
 * caller; copied into the variant). */
static int make_variant(pctx *P, rstage *R, const gr_json *params, const gr_json *b)
{
    gr_stage st = {0};
    deplist D = {0};
    gr_buf id = {0};
    int rc = GR_ENOMEM;
    /* id */
    gr_buf_puts(&id, R->id);
    if (b->len) {
        char **names;
        size_t nn;
        if ((rc = vnames_of(b, &names, &nn))) goto fail;
        gr_buf_putc(&id, '[');
        for (size_t i = 0; i < nn; i++) {
            gr_buf_printf(&id, "%s%s=", i ? "," : "", names[i]);
            put_value(&id, gr_json_get(b, names[i]));
        }
        gr_buf_putc(&id, ']');
        for (size_t i = 0; i < nn; i++) free(names[i]);
        free(names);
    }
    rc = GR_ENOMEM;
    if (id.oom) goto fail;
    if (id.len > PL_MAX_VARIANT_ID) {
        rc = perr(P, R->line, R->id, "variant id longer than %d bytes; use shorter matrix values",
                  PL_MAX_VARIANT_ID);
        goto fail;
    }
    for (size_t i = 0; i < id.len; i++)
        if ((unsigned char)id.data[i] < 0x20 || id.data[i] == 0x7f) {
            rc = perr(P, R->line, R->id,
                      "a matrix value holds a control character, which a stage id cannot");
            goto fail;
        }
    st.id = gr_buf_take(&id);
    if (!(st.op = xstrdup(R->op->name)) || !(st.params = gr_jsonb_copy(params))) goto fail;
    /* rewrite input references to variant ids */
    for (size_t i = 0; i < st.params->len; i++) {
        int kind = gr_param_input_kind(R->op, st.params->keys[i]);
        gr_json *v = st.params->items[i];
        if (kind == GR_P_INPUT) {
            long u = stage_ref(P, v);
            if (u < 0) continue;
            size_t *idx, n;
            if ((rc = consistent(P, &P->rs[u], b, &idx, &n))) goto fail;
            if (n != 1) {
                free(idx);
                rc = perr(P, v->line, R->id, "parameter '%s': '%s' has %zu matching variants",
                          st.params->keys[i], v->str, n);
                goto fail;
            }
            const char *vid = P->pl->stages[P->rs[u].var[idx[0]].out].id;
            free(idx);
            char *ns = xstrdup(vid);
            rc = GR_ENOMEM;
            if (!ns) goto fail;
            free(v->str);
            v->str = ns;
            v->len = strlen(ns);
            if ((rc = dep_add(P, &D, ns))) goto fail;
        } else if (kind == GR_P_INPUTS) {
            /* collected, then made an array at once: a fan-in over 10^5
             * variants would be quadratic with gr_jsonb_push */
            blist nl = {0};
            rc = 0;
            for (size_t k = 0; k < v->len; k++) {
                long u = stage_ref(P, v->items[k]);
                if (u < 0) {
                    if ((rc = blist_push(&nl, gr_jsonb_copy(v->items[k])))) break;
                    continue;
                }
                size_t *idx, n;
                if ((rc = consistent(P, &P->rs[u], b, &idx, &n))) break;
                if (!n) {
                    rc = perr(P, v->items[k]->line, R->id,
                              "parameter '%s': no variant of '%s' matches %s's matrix values",
                              st.params->keys[i], v->items[k]->str, st.id);
                    break;
                }
                for (size_t q = 0; !rc && q < n; q++) {
                    const char *vid = P->pl->stages[P->rs[u].var[idx[q]].out].id;
                    gr_json *s = gr_jsonb_str(vid);
                    if (s) s->line = v->items[k]->line;
                    if (!(rc = blist_push(&nl, s))) rc = dep_add(P, &D, vid);
                }
                free(idx);
                if (rc) break;
            }
            if (rc) {
                blist_free(&nl);
                goto fail;
            }
            gr_json *arr = gr_jsonb_arr_take(nl.b, nl.n);
            rc = GR_ENOMEM;
            if (!arr) goto fail;
            arr->line = v->line;
            gr_json_free(st.params->items[i]);
            st.params->items[i] = arr;
        }
    }
    for (size_t a = 0; R->after && a < R->after->len; a++) {
        long u = smap_get(&P->ids, R->after->items[a]->str);
        size_t *idx, n;
        if ((rc = consistent(P, &P->rs[u], b, &idx, &n))) goto fail;
        for (size_t q = 0; !rc && q < n; q++)
            rc = dep_add(P, &D, P->pl->stages[P->rs[u].var[idx[q]].out].id);
        free(idx);
        if (rc) goto fail;
    }
    rc = gr_op_check_params(R->op, st.params);
    if (rc) {
        rc = perr_wrap(P, R->line, st.id, rc);
        goto fail;
    }
    st.deps = D.ids;
    st.ndeps = D.n;
    D.ids = NULL;
    D.n = 0;
    st.retries = R->retries;
    st.timeout = R->timeout;
    st.priority = R->priority;
    st.line = R->line;
    /* record the variant */
    rc = GR_ENOMEM;
    if (R->nvar == R->capvar) {
        size_t nc = R->capvar ? R->capvar * 2 : 4;
        variant *nv = realloc(R->var, nc * sizeof *nv);
        if (!nv) goto fail;
        R->var = nv;
        R->capvar = nc;
    }
    gr_json *bc = gr_jsonb_copy(b);
    if (!bc) goto fail;
    if ((rc = push_out(P, &st))) {
        gr_json_free(bc);
        goto fail;
    }
    R->var[R->nvar].out = P->pl->nstages - 1;
    R->var[R->nvar].binding = bc;
    R->nvar++;
    const char *oid = P->pl->stages[P->pl->nstages - 1].id;
    rc = smap_put(&P->outids, oid, P->pl->nstages - 1);
    if (rc == 1)
        rc = perr(P, R->line, R->id,
                  "two variants are both named '%s' (a repeated matrix value, or values that "
                  "print alike)",
                  oid);
    dep_free(&D);
    return rc;
fail:
    gr_buf_free(&id);
    stage_clear(&st);
    dep_free(&D);
    return rc ? rc : GR_ENOMEM;
}

static int expand(pctx *P, size_t ri)
{
    rstage *R = &P->rs[ri];
    int rc = 0;
    /* own matrix combinations, odometer-style */
    size_t nm = R->matrix ? R->matrix->len : 0;
    size_t *at = nm ? calloc(nm, sizeof *at) : NULL;
    size_t total = 1;
    if (nm && !at) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t m = 0; m < nm; m++) {
        size_t c = R->matrix->items[m]->len;
        if (total > GR_PIPELINE_MAX_STAGES / c) {
            free(at);
            return perr(P, R->matrix->line, R->id, "matrix has more than %d combinations",
                        GR_PIPELINE_MAX_STAGES);
        }
        total *= c;
    }
    gr_json *params = NULL;
    blist L = {0};
    for (size_t combo = 0; combo < total; combo++) {
        rc = GR_ENOMEM;
        gr_json *b = gr_jsonb_obj();
        if (!(params = gr_jsonb_copy(R->params)) || !b) {
            gr_json_free(b);
            goto out;
        }
        for (size_t m = 0; m < nm; m++) {
            const gr_json *v = R->matrix->items[m]->items[at[m]];
            if (gr_jsonb_set(b, R->matrix->keys[m], gr_jsonb_copy(v)) ||
                gr_jsonb_set(params, R->matrix->keys[m], gr_jsonb_copy(v))) {
                gr_json_free(b);
                goto out;
            }
        }
        if ((rc = blist_push(&L, b))) goto out;
        /* map: join with every mapped single-input upstream */
        for (size_t i = 0; i < params->len; i++) {
            if (gr_param_input_kind(R->op, params->keys[i]) != GR_P_INPUT) continue;
            long u = stage_ref(P, params->items[i]);
            if (u < 0) continue;
            if ((rc = join(P, &L, &P->rs[u], R->id, params->items[i]->line))) goto out;
        }
        for (size_t k = 0; k < L.n; k++) {
            if (R->nvar == 0 && k == 0) {
                if ((rc = vnames_of(L.b[0], &R->vnames, &R->nvn))) goto out;
            } else if (!same_names(R->vnames, R->nvn, L.b[k])) {
                rc = perr(P, R->line, R->id,
                          "its variants would have different matrix variables (a matrix over "
                          "inputs that are expanded differently)");
                goto out;
            }
            if ((rc = make_variant(P, R, params, L.b[k]))) goto out;
        }
        blist_free(&L);
        gr_json_free(params);
        params = NULL;
        for (size_t m = nm; m-- > 0;) {
            if (++at[m] < R->matrix->items[m]->len) break;
            at[m] = 0;
        }
    }
    rc = 0;
    if (!R->nvar)
        rc = perr(P, R->line, R->id,
                  "its inputs' matrix variables never agree, so it has no variants");
out:
    gr_json_free(params);
    blist_free(&L);
    free(at);
    return rc;
}

/* ------------------------------------------------------------------ main */

static void raw_free(rstage *R)
{
    free(R->id);
    gr_json_free(R->params);
    gr_json_free(R->matrix);
    gr_json_free(R->after);
    free(R->up);
    for (size_t i = 0; i < R->nvar; i++) gr_json_free(R->var[i].binding);
    free(R->var);
    for (size_t i = 0; i < R->nix; i++) vindex_free(&R->ix[i]);
    free(R->ix);
    for (size_t i = 0; i < R->nvn; i++) free(R->vnames[i]);
    free(R->vnames);
}

static char *default_name(const char *file)
{
    if (!file) return xstrdup("pipeline");
    const char *b = strrchr(file, '/');
    b = b ? b + 1 : file;
    size_t n = strlen(b);
    const char *dot = strrchr(b, '.');
    if (dot && dot != b) n = (size_t)(dot - b);
    char *s = strndup(b, n);
    if (!s) gr_seterr(GR_ENOMEM, "out of memory");
    return s;
}

static int top_level(pctx *P, gr_json *root)
{
    static const char *const allowed[] = {"name", "description", "priority",
                                          "vars", "stages",      NULL};
    if (root->type != GR_JSON_OBJ)
        return perr(P, root->line, NULL, "a pipeline file is a mapping with 'stages:'");
    for (size_t i = 0; i < root->len; i++)
        if (!streq_any(root->keys[i], allowed))
            return perr(P, root->items[i]->line, NULL,
                        "unknown top-level key '%s' (name, description, priority, vars, stages)",
                        root->keys[i]);
    const gr_json *st = gr_json_get(root, "stages");
    if (!st) return perr(P, root->line, NULL, "missing 'stages:'");
    if (st->type != GR_JSON_OBJ || !st->len)
        return perr(P, st->line, NULL, "'stages' must be a non-empty mapping of id: stage");
    const gr_json *vars = gr_json_get(root, "vars");
    if (vars && vars->type != GR_JSON_OBJ)
        return perr(P, vars->line, NULL, "'vars' must be a mapping of name: value");
    return 0;
}

gr_pipeline *gr_pipeline_parse(const char *text, size_t len, const char *filename,
                               const char *const *sets, size_t nsets)
{
    pctx P = {.file = filename};
    gr_json *root = NULL;
    int rc = GR_ENOMEM;
    if (!(P.pl = calloc(1, sizeof *P.pl))) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    if (!text) text = "";
    if (filename && !(P.dir = absolute_dir(filename))) goto fail;
    if (!(root = yaml_to_json(&P, text, len))) goto fail;
    if ((rc = top_level(&P, root))) goto fail;
    for (size_t i = 0; i < nsets; i++)
        if ((rc = apply_set(&P, root, sets[i]))) {
            if (rc != GR_ENOMEM) seterr_line(rc, gr_errmsg());
            goto fail;
        }
    /* after --set: name and priority */
    const gr_json *nm = gr_json_get(root, "name");
    if (nm && (nm->type != GR_JSON_STR || !nm->len || nm->len > 200)) {
        rc = perr(&P, nm->line, NULL, "'name' must be a string of 1 to 200 characters");
        goto fail;
    }
    if (!(P.pl->name = nm ? xstrdup(nm->str) : default_name(filename))) goto fail;
    const gr_json *pr = gr_json_get(root, "priority");
    if (pr && (rc = int_field(&P, pr, NULL, "priority", -PL_MAX_PRIORITY, PL_MAX_PRIORITY,
                              &P.pl->priority)))
        goto fail;
    gr_json *stages = (gr_json *)gr_json_get(root, "stages");
    const gr_json *vars = gr_json_get(root, "vars");
    for (size_t i = 0; vars && vars->len > PL_SMALL_MAP && i < vars->len; i++)
        if ((rc = smap_put(&P.vars, vars->keys[i], i)) < 0) goto fail;
    for (size_t i = 0; i < stages->len; i++) {
        if (vars && (rc = subst(&P, vars, &stages->items[i], stages->keys[i], 0))) goto fail;
        if (!vars && (rc = subst(&P, NULL, &stages->items[i], stages->keys[i], 0))) goto fail;
        if ((rc = build_raw(&P, stages->keys[i], stages->items[i], P.pl->priority))) goto fail;
        if ((rc = smap_put(&P.ids, P.rs[P.nrs - 1].id, P.nrs - 1)) < 0) goto fail;
    }
    size_t nuser = P.nrs;
    for (size_t i = 0; i < nuser; i++)
        if ((rc = each_ref(&P, i, take_uri))) goto fail;
    /* the smap holds pointers into ids that stay put; rs itself may have
     * moved, which the map does not care about */
    rc = GR_ENOMEM;
    if (!(P.upseen = calloc(P.nrs + 1, sizeof *P.upseen))) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < P.nrs; i++) {
        if ((rc = each_ref(&P, i, link_ref))) goto fail;
        if ((rc = link_after(&P, i))) goto fail;
    }
    if ((rc = toposort(&P))) goto fail;
    for (size_t i = 0; i < P.norder; i++)
        if ((rc = expand(&P, P.order[i]))) goto fail;
    gr_json_free(root);
    for (size_t i = 0; i < P.nrs; i++) raw_free(&P.rs[i]);
    free(P.rs);
    free(P.order);
    free(P.upseen);
    free(P.dir);
    smap_free(&P.ids);
    smap_free(&P.outids);
    smap_free(&P.vars);
    return P.pl;
fail:
    gr_json_free(root);
    for (size_t i = 0; i < P.nrs; i++) raw_free(&P.rs[i]);
    free(P.rs);
    free(P.order);
    free(P.upseen);
    free(P.dir);
    smap_free(&P.ids);
    smap_free(&P.outids);
    smap_free(&P.vars);
    gr_pipeline_free(&P.pl);
    return NULL;
}

gr_pipeline *gr_pipeline_load(const char *path, const char *const *sets, size_t nsets)
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
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > 64u << 20) {
            fclose(f);
            gr_buf_free(&b);
            gr_seterr(GR_EINVAL, "%s: larger than 64 MiB; not a pipeline file", path);
            return NULL;
        }
        gr_buf_append(&b, chunk, n);
    }
    int err = ferror(f);
    fclose(f);
    if (err || b.oom) {
        gr_buf_free(&b);
        gr_seterr(err ? GR_EIO : GR_ENOMEM, "%s: cannot read", path);
        return NULL;
    }
    gr_pipeline *p = gr_pipeline_parse(b.data ? b.data : "", b.len, path, sets, nsets);
    gr_buf_free(&b);
    return p;
}

void gr_pipeline_free(gr_pipeline **pp)
{
    if (!pp || !*pp) return;
    gr_pipeline *p = *pp;
    for (size_t i = 0; i < p->nstages; i++) stage_clear(&p->stages[i]);
    free(p->stages);
    free(p->name);
    free(p);
    *pp = NULL;
}

const gr_stage *gr_pipeline_find(const gr_pipeline *p, const char *id)
{
    if (!p || !id) return NULL;
    for (size_t i = 0; i < p->nstages; i++)
        if (!strcmp(p->stages[i].id, id)) return &p->stages[i];
    return NULL;
}

int gr_pipeline_to_json(const gr_pipeline *p, gr_buf *b)
{
    gr_buf_puts(b, "{\"name\":");
    gr_buf_json_str(b, p->name, strlen(p->name));
    gr_buf_printf(b, ",\"priority\":%d,\"stages\":[", p->priority);
    for (size_t i = 0; i < p->nstages; i++) {
        const gr_stage *s = &p->stages[i];
        gr_buf_puts(b, i ? ",{\"id\":" : "{\"id\":");
        gr_buf_json_str(b, s->id, strlen(s->id));
        gr_buf_puts(b, ",\"op\":");
        gr_buf_json_str(b, s->op, strlen(s->op));
        gr_buf_puts(b, ",\"params\":");
        int rc = gr_jsonb_write(b, s->params);
        if (rc) return rc;
        gr_buf_puts(b, ",\"deps\":[");
        for (size_t d = 0; d < s->ndeps; d++) {
            if (d) gr_buf_putc(b, ',');
            gr_buf_json_str(b, s->deps[d], strlen(s->deps[d]));
        }
        gr_buf_printf(b, "],\"retries\":%d,\"timeout\":", s->retries);
        gr_buf_json_num(b, s->timeout);
        gr_buf_printf(b, ",\"priority\":%d,\"line\":%d}", s->priority, s->line);
    }
    gr_buf_puts(b, "]}");
    return b->oom ? gr_seterr(GR_ENOMEM, "out of memory") : 0;
}

static int map_one(gr_json *s, const char *param, gr_input_fn fn, void *ud)
{
    char *repl = NULL;
    int rc = fn(ud, param, s->str ? s->str : "", &repl);
    if (rc) return rc;
    if (repl) {
        free(s->str);
        s->str = repl;
        s->len = strlen(repl);
    }
    return 0;
}

gr_json *gr_params_map_inputs(const gr_op *op, const gr_json *params, gr_input_fn fn, void *ud)
{
    if (!op || !params || params->type != GR_JSON_OBJ) {
        gr_seterr(GR_EINVAL, "%s: parameters must be an object", op ? op->name : "op");
        return NULL;
    }
    gr_json *c = gr_jsonb_copy(params);
    if (!c) return NULL;
    for (size_t i = 0; i < c->len; i++) {
        int kind = gr_param_input_kind(op, c->keys[i]);
        gr_json *v = c->items[i];
        int rc = 0;
        if (kind == GR_P_INPUT && v->type == GR_JSON_STR)
            rc = map_one(v, c->keys[i], fn, ud);
        else if (kind == GR_P_INPUTS && v->type == GR_JSON_ARR)
            for (size_t k = 0; !rc && k < v->len; k++)
                if (v->items[k]->type == GR_JSON_STR) rc = map_one(v->items[k], c->keys[i], fn, ud);
        if (rc) {
            gr_json_free(c);
            return NULL;
        }
    }
    return c;
}
