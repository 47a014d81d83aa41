/* gr_report: records of stage metrics, CSV, Markdown pivot tables and SVG
 * plots (see gr_report.h). */
#include "gr_report.h"
#include "gr_err.h"
#include "gr_jsonb.h"
#include "gr_svg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLOT_W         640
#define PLOT_H         420
#define MARKER_R       3.0
#define DEFAULT_DIGITS 3
#define MAX_DIGITS     12
#define MAX_SPEC_VARS  16 /* rows / series variables in one spec */
#define MAX_CONDS      8  /* conditions in one selector */
#define MAX_ALTS       64 /* '|'-separated values in one condition */

typedef struct rvar {
    char *name, *value;
} rvar;

typedef struct rmet {
    char *name;
    double v;
} rmet;

typedef struct rrec {
    char *stage, *base, *op;
    rvar *vars; /* sorted by name, unique */
    size_t nvars;
    rmet *mets;
    size_t nmets;
} rrec;

struct gr_report {
    rrec *rec;
    size_t n, cap;
};

gr_report *gr_report_new(void)
{
    gr_report *r = calloc(1, sizeof *r);
    if (!r) gr_seterr(GR_ENOMEM, "out of memory");
    return r;
}

static void rec_free(rrec *c)
{
    free(c->stage);
    free(c->base);
    free(c->op);
    for (size_t i = 0; i < c->nvars; i++) {
        free(c->vars[i].name);
        free(c->vars[i].value);
    }
    free(c->vars);
    for (size_t i = 0; i < c->nmets; i++) free(c->mets[i].name);
    free(c->mets);
}

void gr_report_destroy(gr_report **r)
{
    if (!r || !*r) return;
    for (size_t i = 0; i < (*r)->n; i++) rec_free(&(*r)->rec[i]);
    free((*r)->rec);
    free(*r);
    *r = NULL;
}

size_t gr_report_count(const gr_report *r)
{
    return r->n;
}

/* ---------------------------------------------------------------- records */

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* Sets name = value in c (replacing an existing value). Takes value. */
static int set_var(rrec *c, const char *name, size_t nlen, char *value)
{
    if (!value) return gr_seterr(GR_ENOMEM, "out of memory");
    size_t i = 0;
    for (; i < c->nvars; i++) {
        const char *a = c->vars[i].name;
        int k = strncmp(a, name, nlen);
        if (k == 0 && !a[nlen]) {
            free(c->vars[i].value);
            c->vars[i].value = value;
            return 0;
        }
        if (k >= 0) break; /* a sorts after name (k == 0: a is longer) */
    }
    rvar *v = realloc(c->vars, (c->nvars + 1) * sizeof *v);
    char *nm = dupn(name, nlen);
    if (!v || !nm) {
        if (v) c->vars = v;
        free(nm);
        free(value);
        return gr_seterr(GR_ENOMEM, "out of memory");
    }
    c->vars = v;
    memmove(&v[i + 1], &v[i], (c->nvars - i) * sizeof *v);
    v[i].name = nm;
    v[i].value = value;
    c->nvars++;
    return 0;
}

static int is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-';
}

/* Length of "name=" at s (0 if s does not start with one). */
static size_t binding_start(const char *s, const char *end)
{
    const char *p = s;
    while (p < end && is_name_char(*p)) p++;
    return p > s && p < end && *p == '=' ? (size_t)(p - s) : 0;
}

/* Parses the bindings of "base[k=v,k2=v2]" into c. Values may hold commas
 * inside JSON lists/objects/strings; a comma at depth 0 followed by "name="
 * starts the next binding. */
static int parse_stage(rrec *c, const char *id)
{
    const char *lb = strchr(id, '[');
    if (!lb) return (c->base = strdup(id)) ? 0 : gr_seterr(GR_ENOMEM, "out of memory");
    const size_t len = strlen(id);
    if (lb == id || id[len - 1] != ']')
        return gr_seterr(GR_EINVAL, "report: stage id '%.200s': want name[var=value,...]", id);
    if (!(c->base = dupn(id, (size_t)(lb - id)))) return gr_seterr(GR_ENOMEM, "out of memory");
    const char *p = lb + 1, *end = id + len - 1;
    while (p < end) {
        size_t nl = binding_start(p, end);
        if (!nl)
            return gr_seterr(GR_EINVAL,
                             "report: stage id '%.200s': binding at offset %zu is not "
                             "var=value",
                             id, (size_t)(p - id));
        const char *v = p + nl + 1, *q = v;
        int depth = 0, in_str = 0;
        while (q < end) {
            char ch = *q;
            if (in_str) {
                if (ch == '\\' && q + 1 < end)
                    q++;
                else if (ch == '"')
                    in_str = 0;
            } else if (ch == '"' && depth > 0) {
                in_str = 1;
            } else if (ch == '[' || ch == '{') {
                depth++;
            } else if ((ch == ']' || ch == '}') && depth > 0) {
                depth--;
            } else if (ch == ',' && depth == 0 && binding_start(q + 1, end)) {
                break;
            }
            q++;
        }
        int rc = set_var(c, p, nl, dupn(v, (size_t)(q - v)));
        if (rc) return rc;
        p = q < end ? q + 1 : q;
    }
    return 0;
}

static int add_metrics(rrec *c, const gr_json *m)
{
    if (!m || m->type != GR_JSON_OBJ) return 0;
    c->mets = calloc(m->len ? m->len : 1, sizeof *c->mets);
    if (!c->mets) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < m->len; i++) {
        if (m->items[i]->type != GR_JSON_NUM) continue;
        if (strlen(m->keys[i]) > GR_REPORT_MAX_NAME)
            return gr_seterr(GR_EINVAL, "report: stage '%.100s': metric name longer than %d bytes",
                             c->stage, GR_REPORT_MAX_NAME);
        if (!(c->mets[c->nmets].name = strdup(m->keys[i])))
            return gr_seterr(GR_ENOMEM, "out of memory");
        c->mets[c->nmets++].v = m->items[i]->num;
    }
    return 0;
}

static int add_params(rrec *c, const gr_json *p)
{
    if (!p || p->type != GR_JSON_OBJ) return 0;
    for (size_t i = 0; i < p->len; i++) {
        const char *k = p->keys[i];
        const gr_json *v = p->items[i];
        if (k[0] == '_' || !*k || strlen(k) > GR_REPORT_MAX_NAME) continue;
        char *text = NULL;
        if (v->type == GR_JSON_STR) {
            if (!strncmp(v->str, "sha256:", 7) || strlen(v->str) != v->len) continue;
            text = strdup(v->str);
        } else if (v->type == GR_JSON_NUM || v->type == GR_JSON_BOOL) {
            text = gr_jsonb_canon(v);
        } else {
            continue;
        }
        int rc = set_var(c, k, strlen(k), text);
        if (rc) return rc;
    }
    return 0;
}

int gr_report_add(gr_report *r, const char *stage, const char *op, const gr_json *params,
                  const gr_json *metrics)
{
    if (r->n >= GR_REPORT_MAX_RECORDS)
        return gr_seterr(GR_EINVAL, "report: more than %d stages", GR_REPORT_MAX_RECORDS);
    if (!stage || !*stage || strlen(stage) > GR_REPORT_MAX_NAME)
        return gr_seterr(GR_EINVAL, "report: stage id empty or longer than %d bytes",
                         GR_REPORT_MAX_NAME);
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 16;
        rrec *v = realloc(r->rec, nc * sizeof *v);
        if (!v) return gr_seterr(GR_ENOMEM, "out of memory");
        r->rec = v;
        r->cap = nc;
    }
    rrec c = {0};
    int rc = 0;
    if (!(c.stage = strdup(stage)) || (op && !(c.op = strdup(op))))
        rc = gr_seterr(GR_ENOMEM, "out of memory");
    if (!rc) rc = add_params(&c, params);
    if (!rc) rc = parse_stage(&c, stage); /* bindings override parameters */
    if (!rc) rc = add_metrics(&c, metrics);
    if (rc) {
        rec_free(&c);
        return rc;
    }
    r->rec[r->n++] = c;
    return 0;
}

/* A variable's value; "stage" and "name" are the stage id and name unless a
 * real variable has that name. NULL when absent. */
static const char *rec_var(const rrec *c, const char *name)
{
    for (size_t i = 0; i < c->nvars; i++)
        if (!strcmp(c->vars[i].name, name)) return c->vars[i].value;
    if (!strcmp(name, "stage")) return c->stage;
    if (!strcmp(name, "name")) return c->base;
    return NULL;
}

static int rec_metric(const rrec *c, const char *name, double *v)
{
    for (size_t i = 0; i < c->nmets; i++)
        if (!strcmp(c->mets[i].name, name)) return *v = c->mets[i].v, 1;
    return 0;
}

/* ---------------------------------------------------------------- metric lists */

static int is_timing(const char *name)
{
    size_t n = strlen(name);
    return !strcmp(name, "seconds") || (n >= 2 && !strcmp(name + n - 2, "_s"));
}

/* The default metric names (borrowed from the records). */
static int default_metrics(const gr_report *r, const char ***out, size_t *nout)
{
    const char **v = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < r->n; i++)
        for (size_t j = 0; j < r->rec[i].nmets; j++) {
            const char *m = r->rec[i].mets[j].name;
            if (is_timing(m)) continue;
            int seen = 0;
            for (size_t k = 0; k < n && !seen; k++) seen = !strcmp(v[k], m);
            if (seen) continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                const char **nv = realloc(v, cap * sizeof *nv);
                if (!nv) {
                    free(v);
                    return gr_seterr(GR_ENOMEM, "out of memory");
                }
                v = nv;
            }
            v[n++] = m;
        }
    *out = v;
    *nout = n;
    return 0;
}

/* ---------------------------------------------------------------- CSV / Markdown */

static void csv_field(gr_buf *b, const char *s)
{
    if (!s) s = "";
    if (!strpbrk(s, ",\"\r\n")) {
        gr_buf_puts(b, s);
        return;
    }
    gr_buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"') gr_buf_putc(b, '"');
        gr_buf_putc(b, *s);
    }
    gr_buf_putc(b, '"');
}

/* Shortest round-trip form; nothing for a missing value. */
static void csv_num(gr_buf *b, double v)
{
    if (isfinite(v)) gr_buf_json_num(b, v);
}

/* ",x,y\n" */
static void csv_pair(gr_buf *b, double x, double y)
{
    gr_buf_putc(b, ',');
    csv_num(b, x);
    gr_buf_putc(b, ',');
    csv_num(b, y);
    gr_buf_putc(b, '\n');
}

static void num_text(char *buf, size_t n, double v, int digits)
{
    if (isnan(v))
        snprintf(buf, n, "-");
    else if (digits < 0)
        snprintf(buf, n, "%.9g", v);
    else if (v != 0 && (fabs(v) < 0.5 * pow(10, -digits) || fabs(v) >= 1e15))
        /* would print as 0.000 (energy errors, tiny losses) or overflow the
         * column: the same number of significant digits in exponent form */
        snprintf(buf, n, "%.*g", digits > 0 ? digits : 1, v);
    else
        snprintf(buf, n, "%.*f", digits, v);
}

int gr_report_csv(const gr_report *r, const char *const *metrics, size_t nm, gr_buf *out)
{
    const char **def = NULL;
    int rc = 0;
    if (!metrics) {
        if ((rc = default_metrics(r, &def, &nm))) return rc;
        metrics = def;
    }
    /* variable names: union over records, sorted */
    const char **vn = NULL;
    size_t nv = 0;
    for (size_t i = 0; i < r->n; i++) nv += r->rec[i].nvars;
    vn = malloc((nv ? nv : 1) * sizeof *vn);
    if (!vn) {
        free(def);
        return gr_seterr(GR_ENOMEM, "out of memory");
    }
    nv = 0;
    for (size_t i = 0; i < r->n; i++)
        for (size_t j = 0; j < r->rec[i].nvars; j++) {
            const char *name = r->rec[i].vars[j].name;
            size_t k = 0;
            while (k < nv && strcmp(vn[k], name) < 0) k++;
            if (k < nv && !strcmp(vn[k], name)) continue;
            memmove(&vn[k + 1], &vn[k], (nv - k) * sizeof *vn);
            vn[k] = name;
            nv++;
        }
    gr_buf_puts(out, "stage,op");
    for (size_t k = 0; k < nv; k++) {
        gr_buf_putc(out, ',');
        csv_field(out, vn[k]);
    }
    for (size_t k = 0; k < nm; k++) {
        gr_buf_putc(out, ',');
        csv_field(out, metrics[k]);
    }
    gr_buf_putc(out, '\n');
    for (size_t i = 0; i < r->n; i++) {
        const rrec *c = &r->rec[i];
        csv_field(out, c->stage);
        gr_buf_putc(out, ',');
        csv_field(out, c->op);
        for (size_t k = 0; k < nv; k++) {
            gr_buf_putc(out, ',');
            const char *v = NULL;
            for (size_t j = 0; j < c->nvars && !v; j++)
                if (!strcmp(c->vars[j].name, vn[k])) v = c->vars[j].value;
            csv_field(out, v);
        }
        for (size_t k = 0; k < nm; k++) {
            double v;
            gr_buf_putc(out, ',');
            if (rec_metric(c, metrics[k], &v)) csv_num(out, v);
        }
        gr_buf_putc(out, '\n');
    }
    free(vn);
    free(def);
    return out->oom ? gr_seterr(GR_ENOMEM, "out of memory") : 0;
}

/* A grid of text cells rendered as an aligned Markdown table. */
typedef struct grid {
    size_t rows, cols; /* rows includes the header */
    char **cell;
} grid;

static int grid_init(grid *g, size_t rows, size_t cols)
{
    g->rows = rows;
    g->cols = cols;
    if (rows && cols > SIZE_MAX / sizeof(char *) / rows)
        return gr_seterr(GR_ENOMEM, "out of memory");
    const size_t n = rows * cols;
    g->cell = calloc(n ? n : 1, sizeof *g->cell);
    return g->cell ? 0 : gr_seterr(GR_ENOMEM, "out of memory");
}

static void grid_free(grid *g)
{
    for (size_t i = 0; g->cell && i < g->rows * g->cols; i++) free(g->cell[i]);
    free(g->cell);
    g->cell = NULL;
}

static int grid_set(grid *g, size_t r, size_t c, const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) return gr_seterr(GR_ENOMEM, "out of memory");
    /* a '|' would end the cell early; newlines would end the row */
    for (char *p = d; *p; p++)
        if (*p == '|' || *p == '\n' || *p == '\r') *p = '/';
    free(g->cell[r * g->cols + c]);
    g->cell[r * g->cols + c] = d;
    return 0;
}

/* Display width of UTF-8 text (code points). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++) w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static void grid_md(const grid *g, gr_buf *out, size_t nleft)
{
    size_t *w = calloc(g->cols ? g->cols : 1, sizeof *w);
    if (!w) {
        out->oom = 1;
        return;
    }
    for (size_t c = 0; c < g->cols; c++) {
        w[c] = 3; /* Markdown wants at least three dashes */
        for (size_t r = 0; r < g->rows; r++) {
            size_t k = text_width(g->cell[r * g->cols + c] ? g->cell[r * g->cols + c] : "");
            if (k > w[c]) w[c] = k;
        }
    }
    /* the first nleft columns (labels) left-aligned, numbers right-aligned */
    for (size_t r = 0; r < g->rows; r++) {
        gr_buf_putc(out, '|');
        for (size_t c = 0; c < g->cols; c++) {
            const char *s = g->cell[r * g->cols + c] ? g->cell[r * g->cols + c] : "";
            size_t pad = w[c] - text_width(s);
            gr_buf_putc(out, ' ');
            if (c >= nleft)
                for (size_t k = 0; k < pad; k++) gr_buf_putc(out, ' ');
            gr_buf_puts(out, s);
            if (c < nleft)
                for (size_t k = 0; k < pad; k++) gr_buf_putc(out, ' ');
            gr_buf_puts(out, " |");
        }
        gr_buf_putc(out, '\n');
        if (r == 0) {
            gr_buf_putc(out, '|');
            for (size_t c = 0; c < g->cols; c++) {
                gr_buf_putc(out, c < nleft ? ':' : '-');
                for (size_t k = 0; k < w[c]; k++) gr_buf_putc(out, '-');
                gr_buf_putc(out, c < nleft ? '-' : ':');
                gr_buf_putc(out, '|');
            }
            gr_buf_putc(out, '\n');
        }
    }
    free(w);
}

int gr_report_md_all(const gr_report *r, const char *const *metrics, size_t nm, gr_buf *out)
{
    const char **def = NULL;
    grid g = {0};
    int rc = 0;
    if (!metrics) {
        if ((rc = default_metrics(r, &def, &nm))) return rc;
        metrics = def;
    }
    if ((rc = grid_init(&g, r->n + 1, nm + 1))) goto done;
    rc = grid_set(&g, 0, 0, "stage");
    for (size_t k = 0; !rc && k < nm; k++) rc = grid_set(&g, 0, k + 1, metrics[k]);
    for (size_t i = 0; !rc && i < r->n; i++) {
        rc = grid_set(&g, i + 1, 0, r->rec[i].stage);
        for (size_t k = 0; !rc && k < nm; k++) {
            double v;
            char t[64];
            if (rec_metric(&r->rec[i], metrics[k], &v))
                num_text(t, sizeof t, v, -1);
            else
                strcpy(t, "-");
            rc = grid_set(&g, i + 1, k + 1, t);
        }
    }
    if (!rc) grid_md(&g, out, 1);
    if (!rc && out->oom) rc = gr_seterr(GR_ENOMEM, "out of memory");
done:
    grid_free(&g);
    free(def);
    return rc;
}

/* ---------------------------------------------------------------- specs */

/* A list of strings from a string or an array of strings (borrowed). */
static int str_list(const gr_json *v, const char *what, const char *field, const char **out,
                    size_t cap, size_t *n)
{
    *n = 0;
    if (!v) return 0;
    if (v->type == GR_JSON_STR) {
        out[(*n)++] = v->str;
        return 0;
    }
    if (v->type != GR_JSON_ARR)
        return gr_seterr(GR_EINVAL, "report: %s: '%s' must be a string or a list of strings", what,
                         field);
    if (v->len > cap)
        return gr_seterr(GR_EINVAL, "report: %s: '%s' lists more than %zu names", what, field, cap);
    for (size_t i = 0; i < v->len; i++) {
        if (v->items[i]->type != GR_JSON_STR)
            return gr_seterr(GR_EINVAL, "report: %s: '%s'[%zu] must be a string", what, field, i);
        out[(*n)++] = v->items[i]->str;
    }
    return 0;
}

/* Text form of a scalar JSON value for comparisons (caller frees). */
static char *scalar_text(const gr_json *v)
{
    if (v->type == GR_JSON_STR) return strdup(v->str);
    if (v->type == GR_JSON_NUM || v->type == GR_JSON_BOOL) return gr_jsonb_canon(v);
    return NULL;
}

static int matches_where(const rrec *c, const gr_json *where)
{
    for (size_t i = 0; where && i < where->len; i++) {
        const char *val = rec_var(c, where->keys[i]);
        const gr_json *w = where->items[i];
        const gr_json *const *alts = w->type == GR_JSON_ARR ? (const gr_json *const *)w->items : &w;
        size_t na = w->type == GR_JSON_ARR ? w->len : 1, ok = 0;
        for (size_t k = 0; k < na && !ok; k++) {
            if (alts[k]->type == GR_JSON_NULL) { /* null: the variable is absent */
                ok = !val;
                continue;
            }
            char *t = val ? scalar_text(alts[k]) : NULL;
            ok = t && !strcmp(t, val);
            free(t);
        }
        if (!ok) return 0;
    }
    return 1;
}

/* Indices of the records that pass `from` and `where` (caller frees). */
static int filter(const gr_report *r, const gr_json *spec, const char *what, size_t **out,
                  size_t *nout)
{
    const char *from[256];
    size_t nf;
    int rc = str_list(gr_json_get(spec, "from"), what, "from", from, 256, &nf);
    if (rc) return rc;
    const gr_json *where = gr_json_get(spec, "where");
    if (where && where->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "report: %s: 'where' must be an object {var: value(s)}", what);
    for (size_t i = 0; where && i < where->len; i++) {
        const gr_json *w = where->items[i];
        const gr_json *const *alts = w->type == GR_JSON_ARR ? (const gr_json *const *)w->items : &w;
        size_t na = w->type == GR_JSON_ARR ? w->len : 1;
        for (size_t k = 0; k < na; k++)
            if (alts[k]->type != GR_JSON_STR && alts[k]->type != GR_JSON_NUM &&
                alts[k]->type != GR_JSON_BOOL && alts[k]->type != GR_JSON_NULL)
                return gr_seterr(GR_EINVAL,
                                 "report: %s: where.%s must be a value or a list of "
                                 "values",
                                 what, where->keys[i]);
    }
    for (size_t k = 0; k < nf; k++) {
        int known = 0;
        for (size_t i = 0; i < r->n && !known; i++) known = !strcmp(r->rec[i].base, from[k]);
        if (!known)
            return gr_seterr(GR_EINVAL,
                             "report: %s: 'from' names '%.100s', which is not among "
                             "the inputs",
                             what, from[k]);
    }
    size_t *idx = malloc((r->n ? r->n : 1) * sizeof *idx), n = 0;
    if (!idx) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < r->n; i++) {
        const rrec *c = &r->rec[i];
        int ok = !nf;
        for (size_t k = 0; k < nf && !ok; k++) ok = !strcmp(c->base, from[k]);
        if (ok && matches_where(c, where)) idx[n++] = i;
    }
    if (!n) {
        free(idx);
        return gr_seterr(GR_EINVAL, "report: %s: no input stage passes 'from' and 'where'", what);
    }
    *out = idx;
    *nout = n;
    return 0;
}

/* ---------------------------------------------------------------- selectors */

typedef struct cond {
    char *var;
    int star;
    char *alts[MAX_ALTS];
    size_t nalts;
} cond;

typedef struct selector {
    char *text; /* as written, for labels */
    char *metric;
    cond c[MAX_CONDS];
    size_t nc;
    char *buf; /* owns the pieces */
} selector;

static void sel_free(selector *s)
{
    free(s->text);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

static int sel_parse(const char *text, const char *what, const char *field, selector *s)
{
    memset(s, 0, sizeof *s);
    if (!(s->text = strdup(text)) || !(s->buf = strdup(text))) {
        sel_free(s);
        return gr_seterr(GR_ENOMEM, "out of memory");
    }
    char *at = strchr(s->buf, '@');
    s->metric = s->buf;
    if (at) *at = 0;
    if (!*s->metric) goto bad;
    if (!at) return 0;
    char *p = at + 1;
    if (!*p) goto bad;
    while (*p) {
        if (s->nc == MAX_CONDS) goto bad;
        cond *c = &s->c[s->nc++];
        char *comma = strchr(p, ','), *eq = strchr(p, '=');
        if (comma) *comma = 0;
        if (!eq || (comma && eq > comma) || eq == p) goto bad;
        *eq = 0;
        c->var = p;
        char *v = eq + 1;
        if (!strcmp(v, "*")) {
            c->star = 1;
        } else {
            for (;;) {
                if (c->nalts == MAX_ALTS) goto bad;
                char *bar = strchr(v, '|');
                if (bar) *bar = 0;
                c->alts[c->nalts++] = v;
                if (!bar) break;
                v = bar + 1;
            }
        }
        if (!comma) break;
        p = comma + 1;
        if (!*p) goto bad; /* a trailing comma */
    }
    return 0;
bad:
    gr_seterr(GR_EINVAL,
              "report: %s: '%s' selector '%.200s': want metric or metric@var=value[|value...],"
              "var=*",
              what, field, text);
    sel_free(s);
    return GR_EINVAL;
}

static int sel_meets(const selector *s, const rrec *c)
{
    for (size_t i = 0; i < s->nc; i++) {
        const char *v = rec_var(c, s->c[i].var);
        if (!v) return 0;
        if (s->c[i].star) continue;
        int ok = 0;
        for (size_t k = 0; k < s->c[i].nalts && !ok; k++) ok = !strcmp(s->c[i].alts[k], v);
        if (!ok) return 0;
    }
    return 1;
}

/* Evaluates s over records idx[0..n): see gr_report.h. */
static int sel_eval(const gr_report *r, const selector *s, const size_t *idx, size_t n,
                    const char *what, double *out)
{
    double sum = 0;
    size_t k = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        const rrec *c = &r->rec[idx[i]];
        double v;
        if (!sel_meets(s, c) || !rec_metric(c, s->metric, &v)) continue;
        if (!s->nc && k) {
            return gr_seterr(GR_EINVAL,
                             "report: %s: '%s' is ambiguous: stages '%.150s' and '%.150s' both "
                             "give it (add a variable to rows/series, or a condition "
                             "metric@var=value)",
                             what, s->text, r->rec[first].stage, c->stage);
        }
        if (!k) first = idx[i];
        sum += v;
        k++;
    }
    *out = k ? sum / (double)k : NAN;
    return 0;
}

/* ---------------------------------------------------------------- keys */

/* The values of vars in c joined by " " (missing -> ""), in a new string. */
static char *key_of(const rrec *c, const char *const *vars, size_t nv)
{
    gr_buf b = {0};
    for (size_t i = 0; i < nv; i++) {
        const char *v = rec_var(c, vars[i]);
        if (i) gr_buf_putc(&b, '\x1f');
        gr_buf_puts(&b, v ? v : "");
    }
    if (!b.data) gr_buf_puts(&b, "");
    if (b.oom) {
        gr_buf_free(&b);
        return NULL;
    }
    return gr_buf_take(&b);
}

/* Distinct strings in order of first appearance. */
typedef struct strset {
    char **s;
    size_t n, cap;
} strset;

/* Index of s in set, adding it (taking ownership) when absent; -1 on ENOMEM. */
static long set_add(strset *set, char *s)
{
    if (!s) return -1;
    for (size_t i = 0; i < set->n; i++)
        if (!strcmp(set->s[i], s)) {
            free(s);
            return (long)i;
        }
    if (set->n == set->cap) {
        size_t nc = set->cap ? set->cap * 2 : 16;
        char **v = realloc(set->s, nc * sizeof *v);
        if (!v) {
            free(s);
            return -1;
        }
        set->s = v;
        set->cap = nc;
    }
    set->s[set->n] = s;
    return (long)set->n++;
}

static void set_free(strset *set)
{
    for (size_t i = 0; i < set->n; i++) free(set->s[i]);
    free(set->s);
    memset(set, 0, sizeof *set);
}

/* Human form of a key: the \x1f separators as ", " (in place). */
static char *key_show(char *k)
{
    for (char *p = k; *p; p++)
        if (*p == '\x1f') *p = ' ';
    return k;
}

static int get_digits(const gr_json *spec, const char *what, int *digits)
{
    const gr_json *d = gr_json_get(spec, "digits");
    *digits = DEFAULT_DIGITS;
    if (!d) return 0;
    if (d->type != GR_JSON_NUM || !d->is_int || d->i < 0 || d->i > MAX_DIGITS)
        return gr_seterr(GR_EINVAL, "report: %s: 'digits' must be an integer in [0, %d]", what,
                         MAX_DIGITS);
    *digits = (int)d->i;
    return 0;
}

static int check_spec(const gr_json *spec, const char *what, const char *const *allowed)
{
    if (!spec || spec->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "report: %s must be an object", what);
    for (size_t i = 0; i < spec->len; i++) {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = !strcmp(*a, spec->keys[i]);
        if (!ok)
            return gr_seterr(GR_EINVAL, "report: %s: unknown field '%.60s'", what, spec->keys[i]);
    }
    return 0;
}

/* ---------------------------------------------------------------- tables */

int gr_report_md_table(const gr_report *r, const gr_json *spec, const char *what, gr_buf *out)
{
    static const char *const allowed[] = {"title", "from",   "where", "rows",   "cols",
                                          "value", "values", "mean",  "digits", NULL};
    const char *rows[MAX_SPEC_VARS], *vals[64];
    size_t nrows, nvals = 0, *idx = NULL, nidx = 0;
    int digits, rc;
    selector *sel = NULL;
    size_t nsel = 0;
    strset rkeys = {0}, ckeys = {0};
    grid g = {0};
    long *rk = NULL, *ck = NULL;
    int *mean_col = NULL;
    if ((rc = check_spec(spec, what, allowed)) || (rc = get_digits(spec, what, &digits)) ||
        (rc = str_list(gr_json_get(spec, "rows"), what, "rows", rows, MAX_SPEC_VARS, &nrows)))
        return rc;
    const char *cols = gr_json_get_str(spec, "cols", NULL);
    const gr_json *jv = gr_json_get(spec, "value"), *jm = gr_json_get(spec, "mean");
    if (!nrows) return gr_seterr(GR_EINVAL, "report: %s: 'rows' (variables) is required", what);
    if (gr_json_get(spec, "cols") && !cols)
        return gr_seterr(GR_EINVAL, "report: %s: 'cols' must be a variable name", what);
    if (cols) {
        if (!jv || jv->type != GR_JSON_STR)
            return gr_seterr(GR_EINVAL, "report: %s: with 'cols', 'value' (a selector) is required",
                             what);
        if (gr_json_get(spec, "values"))
            return gr_seterr(GR_EINVAL, "report: %s: give 'cols' + 'value' or 'values', not both",
                             what);
        vals[0] = jv->str;
        nvals = 1;
    } else {
        if ((rc = str_list(gr_json_get(spec, "values"), what, "values", vals, 64, &nvals)))
            return rc;
        if (!nvals || jv || jm)
            return gr_seterr(GR_EINVAL,
                             "report: %s: without 'cols', give 'values' (a list of "
                             "selectors) and no 'value' or 'mean'",
                             what);
    }
    if (jm && jm->type != GR_JSON_BOOL && jm->type != GR_JSON_ARR)
        return gr_seterr(GR_EINVAL,
                         "report: %s: 'mean' must be true/false or a list of column "
                         "values",
                         what);
    if (!(sel = calloc(nvals, sizeof *sel))) return gr_seterr(GR_ENOMEM, "out of memory");
    for (; nsel < nvals; nsel++)
        if ((rc = sel_parse(vals[nsel], what, cols ? "value" : "values", &sel[nsel]))) goto done;
    if ((rc = filter(r, spec, what, &idx, &nidx))) goto done;
    rk = malloc(nidx * sizeof *rk);
    ck = malloc(nidx * sizeof *ck);
    if (!rk || !ck) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nidx; i++) {
        const rrec *c = &r->rec[idx[i]];
        ck[i] = 0;
        if (cols) {
            const char *cv = rec_var(c, cols);
            if (!cv) {
                rk[i] = ck[i] = -2; /* not in this table */
                continue;
            }
            if ((ck[i] = set_add(&ckeys, strdup(cv))) < 0) goto oom;
        }
        if ((rk[i] = set_add(&rkeys, key_of(c, rows, nrows))) < 0) goto oom;
    }
    if (!rkeys.n) {
        rc = gr_seterr(GR_EINVAL, "report: %s: no input stage has variable '%s'", what, cols);
        goto done;
    }
    const size_t ncols = cols ? ckeys.n : nvals;
    /* mean over which columns */
    int want_mean = jm && (jm->type == GR_JSON_ARR || jm->boolean);
    if (want_mean) {
        if (!(mean_col = calloc(ncols, sizeof *mean_col))) goto oom;
        for (size_t k = 0; k < ncols; k++) mean_col[k] = jm->type != GR_JSON_ARR;
        for (size_t a = 0; jm->type == GR_JSON_ARR && a < jm->len; a++) {
            char *t = scalar_text(jm->items[a]);
            size_t k = 0;
            while (t && k < ncols && strcmp(ckeys.s[k], t)) k++;
            if (!t || k == ncols) {
                rc = gr_seterr(GR_EINVAL,
                               "report: %s: 'mean' lists '%.60s', which is not a value "
                               "of '%s'",
                               what, t ? t : "?", cols);
                free(t);
                goto done;
            }
            free(t);
            mean_col[k] = 1;
        }
    }
    if ((rc = grid_init(&g, rkeys.n + 1, nrows + ncols + (want_mean ? 1 : 0)))) goto done;
    for (size_t k = 0; k < nrows && !rc; k++) rc = grid_set(&g, 0, k, rows[k]);
    for (size_t k = 0; k < ncols && !rc; k++) {
        char head[600];
        if (cols)
            snprintf(head, sizeof head, "%s", ckeys.s[k]);
        else
            snprintf(head, sizeof head, "%s", vals[k]);
        rc = grid_set(&g, 0, nrows + k, head);
    }
    if (!rc && want_mean) {
        gr_buf h = {0};
        gr_buf_puts(&h, "mean");
        if (jm->type == GR_JSON_ARR) {
            gr_buf_puts(&h, " (");
            for (size_t k = 0, m = 0; k < ncols; k++)
                if (mean_col[k]) gr_buf_printf(&h, "%s%s", m++ ? ", " : "", ckeys.s[k]);
            gr_buf_putc(&h, ')');
        }
        rc = h.oom ? gr_seterr(GR_ENOMEM, "out of memory") : grid_set(&g, 0, nrows + ncols, h.data);
        gr_buf_free(&h);
    }
    size_t *grp = malloc(nidx * sizeof *grp);
    if (!grp) goto oom;
    for (size_t row = 0; row < rkeys.n && !rc; row++) {
        /* the row's label cells from its first record */
        for (size_t i = 0; i < nidx; i++)
            if (rk[i] == (long)row) {
                for (size_t k = 0; k < nrows && !rc; k++) {
                    const char *v = rec_var(&r->rec[idx[i]], rows[k]);
                    rc = grid_set(&g, row + 1, k, v ? v : "-");
                }
                break;
            }
        double msum = 0;
        size_t mn = 0, mwant = 0;
        for (size_t k = 0; k < ncols && !rc; k++) {
            size_t ng = 0;
            for (size_t i = 0; i < nidx; i++)
                if (rk[i] == (long)row && (!cols || ck[i] == (long)k)) grp[ng++] = idx[i];
            double v;
            char t[64];
            char cw[700];
            snprintf(cw, sizeof cw, "%s, row %zu", what, row + 1);
            if ((rc = sel_eval(r, &sel[cols ? 0 : k], grp, ng, cw, &v))) break;
            num_text(t, sizeof t, v, digits);
            rc = grid_set(&g, row + 1, nrows + k, t);
            if (want_mean && mean_col[k]) {
                mwant++;
                if (!isnan(v)) msum += v, mn++;
            }
        }
        if (!rc && want_mean) {
            char t[64];
            num_text(t, sizeof t, mn && mn == mwant ? msum / (double)mn : NAN, digits);
            rc = grid_set(&g, row + 1, nrows + ncols, t);
        }
    }
    free(grp);
    if (rc) goto done;
    const char *title = gr_json_get_str(spec, "title", NULL);
    if (title) gr_buf_printf(out, "### %s\n\n", title);
    grid_md(&g, out, nrows);
    gr_buf_putc(out, '\n');
    if (out->oom) rc = gr_seterr(GR_ENOMEM, "out of memory");
    goto done;
oom:
    rc = gr_seterr(GR_ENOMEM, "out of memory");
done:
    for (size_t i = 0; i < nsel; i++) sel_free(&sel[i]);
    free(sel);
    free(idx);
    free(rk);
    free(ck);
    free(mean_col);
    set_free(&rkeys);
    set_free(&ckeys);
    grid_free(&g);
    return rc;
}

/* ---------------------------------------------------------------- plots */

static int parse_num(const char *s, double *v)
{
    char *end;
    if (!*s) return 0;
    *v = strtod(s, &end);
    return *end == 0 && isfinite(*v);
}

typedef struct pt {
    long series;
    double x, y;
    size_t first; /* a record of the group (for labels) */
} pt;

static int cmp_pt(const void *a, const void *b)
{
    const pt *p = a, *q = b;
    if (p->series != q->series) return p->series < q->series ? -1 : 1;
    return (p->x > q->x) - (p->x < q->x);
}

/* Axis titles, log scales and the title. */
static int plot_frame(gr_svg_plot *p, const gr_json *spec, const char *xdef, const char *ydef)
{
    int rc = 0;
    const char *t = gr_json_get_str(spec, "title", NULL);
    if (t) rc = gr_svg_title(p, t);
    if (!rc) rc = gr_svg_xlabel(p, gr_json_get_str(spec, "xlabel", xdef));
    if (!rc) rc = gr_svg_ylabel(p, gr_json_get_str(spec, "ylabel", ydef));
    gr_svg_xlog(p, gr_json_get_bool(spec, "xlog", 0));
    gr_svg_ylog(p, gr_json_get_bool(spec, "ylog", 0));
    return rc;
}

static int line_plot(const gr_report *r, const gr_json *spec, const char *what, const size_t *idx,
                     size_t nidx, gr_svg_plot *p, gr_buf *csv)
{
    const char *series[MAX_SPEC_VARS];
    size_t ns;
    selector ys = {0};
    strset skeys = {0}, gkeys = {0}, refs = {0};
    pt *pts = NULL;
    size_t *grp = NULL;
    double *xs = NULL, *yv = NULL;
    int rc;
    const char *x = gr_json_get_str(spec, "x", NULL), *y = gr_json_get_str(spec, "y", NULL);
    const char *ref_label = gr_json_get_str(spec, "ref_label", NULL);
    if (!x || !y)
        return gr_seterr(GR_EINVAL,
                         "report: %s: a line plot needs 'x' (a variable) and 'y' (a "
                         "selector)",
                         what);
    if ((rc = str_list(gr_json_get(spec, "series"), what, "series", series, MAX_SPEC_VARS, &ns)) ||
        (rc = sel_parse(y, what, "y", &ys)))
        return rc;
    if ((rc = plot_frame(p, spec, x, y))) goto done;
    /* groups: (series key, x value) for records with x; (name, series) for refs */
    long *gk = malloc(nidx * sizeof *gk), *sk = malloc(nidx * sizeof *sk);
    int *isref = calloc(nidx, sizeof *isref);
    grp = malloc(nidx * sizeof *grp);
    if (!gk || !sk || !isref || !grp) {
        free(gk);
        free(sk);
        free(isref);
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nidx && !rc; i++) {
        const rrec *c = &r->rec[idx[i]];
        const char *xv = rec_var(c, x);
        char *skey = key_of(c, series, ns);
        gr_buf g = {0};
        if (!skey) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            break;
        }
        if (xv) {
            double xd;
            if (!parse_num(xv, &xd)) {
                rc = gr_seterr(GR_EINVAL,
                               "report: %s: x variable '%s' of stage '%.150s' is '%.60s', "
                               "not a number",
                               what, x, c->stage, xv);
                free(skey);
                break;
            }
            gr_buf_printf(&g, "%s\x1e%s", skey, xv);
            if ((sk[i] = set_add(&skeys, skey)) < 0) rc = gr_seterr(GR_ENOMEM, "out of memory");
        } else {
            isref[i] = 1;
            const char *rl = ref_label ? rec_var(c, ref_label) : NULL;
            gr_buf_printf(&g, "%s\x1e%s\x1e%s", c->base, skey, rl ? rl : "");
            free(skey);
            sk[i] = -1;
        }
        if (!rc && (g.oom || (gk[i] = set_add(isref[i] ? &refs : &gkeys, gr_buf_take(&g))) < 0))
            rc = gr_seterr(GR_ENOMEM, "out of memory");
        gr_buf_free(&g);
    }
    if (!rc && !gkeys.n)
        rc = gr_seterr(GR_EINVAL, "report: %s: no input stage has the x variable '%s'", what, x);
    if (!rc && !(pts = calloc(gkeys.n, sizeof *pts))) rc = gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t gi = 0; !rc && gi < gkeys.n; gi++) {
        size_t ng = 0;
        for (size_t i = 0; i < nidx; i++)
            if (!isref[i] && gk[i] == (long)gi) grp[ng++] = idx[i];
        const rrec *c = &r->rec[grp[0]];
        char cw[700];
        snprintf(cw, sizeof cw, "%s, point %s=%s", what, x, rec_var(c, x));
        pts[gi].first = grp[0];
        parse_num(rec_var(c, x), &pts[gi].x);
        for (size_t i = 0; i < nidx; i++)
            if (idx[i] == grp[0]) pts[gi].series = sk[i];
        rc = sel_eval(r, &ys, grp, ng, cw, &pts[gi].y);
    }
    if (!rc) {
        qsort(pts, gkeys.n, sizeof *pts, cmp_pt);
        xs = malloc(gkeys.n * sizeof *xs);
        yv = malloc(gkeys.n * sizeof *yv);
        if (!xs || !yv) rc = gr_seterr(GR_ENOMEM, "out of memory");
    }
    if (csv && !rc) gr_buf_puts(csv, "series,x,y\n");
    for (size_t s = 0, at = 0; !rc && s < skeys.n; s++) {
        size_t n = 0;
        while (at < gkeys.n && pts[at].series == (long)s) {
            xs[n] = pts[at].x;
            yv[n] = pts[at].y;
            n++;
            at++;
        }
        char *label = key_show(skeys.s[s]);
        int si = gr_svg_line(p, ns ? label : y, xs, yv, n);
        if (si < 0) {
            rc = si;
            break;
        }
        gr_svg_series_markers(p, si, MARKER_R);
        for (size_t k = 0; csv && k < n; k++) {
            csv_field(csv, ns ? label : y);
            csv_pair(csv, xs[k], yv[k]);
        }
    }
    for (size_t gi = 0; !rc && gi < refs.n; gi++) {
        size_t ng = 0;
        for (size_t i = 0; i < nidx; i++)
            if (isref[i] && gk[i] == (long)gi) grp[ng++] = idx[i];
        const rrec *c = &r->rec[grp[0]];
        double v;
        char cw[700], label[600];
        snprintf(cw, sizeof cw, "%s, reference '%s'", what, c->base);
        if ((rc = sel_eval(r, &ys, grp, ng, cw, &v))) break;
        const char *lv = ref_label ? rec_var(c, ref_label) : NULL;
        char *skey = key_of(c, series, ns);
        if (!skey) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            break;
        }
        snprintf(label, sizeof label, "%s%s%s", lv ? lv : c->base, ns && *skey ? " " : "",
                 ns ? key_show(skey) : "");
        free(skey);
        if (!isnan(v) && (rc = gr_svg_hline(p, v, label))) break;
        if (csv) {
            char field[640];
            snprintf(field, sizeof field, "ref %s", label);
            csv_field(csv, field);
            csv_pair(csv, NAN, v);
        }
    }
    free(gk);
    free(sk);
    free(isref);
done:
    sel_free(&ys);
    set_free(&skeys);
    set_free(&gkeys);
    set_free(&refs);
    free(pts);
    free(grp);
    free(xs);
    free(yv);
    return rc < 0 ? rc : 0;
}

/* Whether variable name is named by a condition of a or b. */
static int cond_var(const selector *a, const selector *b, const char *name)
{
    for (size_t i = 0; i < a->nc; i++)
        if (!strcmp(a->c[i].var, name)) return 1;
    for (size_t i = 0; i < b->nc; i++)
        if (!strcmp(b->c[i].var, name)) return 1;
    return 0;
}

static int scatter_plot(const gr_report *r, const gr_json *spec, const char *what,
                        const size_t *idx, size_t nidx, gr_svg_plot *p, gr_buf *csv)
{
    const char *series[MAX_SPEC_VARS];
    size_t ns;
    selector xs = {0}, ys = {0};
    strset gkeys = {0}, skeys = {0};
    long *gk = NULL, *sk = NULL;
    size_t *grp = NULL;
    double *px = NULL, *py = NULL, *bx = NULL, *by = NULL;
    const char **lab = NULL;
    int rc;
    const char *x = gr_json_get_str(spec, "x", NULL), *y = gr_json_get_str(spec, "y", NULL);
    const char *labels[MAX_SPEC_VARS];
    size_t nl;
    if (!x || !y)
        return gr_seterr(GR_EINVAL, "report: %s: a scatter plot needs 'x' and 'y' (selectors)",
                         what);
    if ((rc = str_list(gr_json_get(spec, "label"), what, "label", labels, MAX_SPEC_VARS, &nl)) ||
        (rc = str_list(gr_json_get(spec, "series"), what, "series", series, MAX_SPEC_VARS, &ns)) ||
        (rc = sel_parse(x, what, "x", &xs)))
        return rc;
    if ((rc = sel_parse(y, what, "y", &ys))) goto done;
    if ((rc = plot_frame(p, spec, x, y))) goto done;
    gk = malloc(nidx * sizeof *gk);
    grp = malloc(nidx * sizeof *grp);
    if (!gk || !grp) goto oom;
    for (size_t i = 0; i < nidx; i++) {
        const rrec *c = &r->rec[idx[i]];
        gr_buf g = {0};
        gr_buf_puts(&g, c->base);
        for (size_t k = 0; k < c->nvars; k++)
            if (!cond_var(&xs, &ys, c->vars[k].name))
                gr_buf_printf(&g, "\x1f%s=%s", c->vars[k].name, c->vars[k].value);
        if (g.oom || (gk[i] = set_add(&gkeys, gr_buf_take(&g))) < 0) {
            gr_buf_free(&g);
            goto oom;
        }
    }
    const size_t np = gkeys.n;
    px = malloc(np * sizeof *px);
    py = malloc(np * sizeof *py);
    sk = malloc(np * sizeof *sk);
    bx = malloc(np * sizeof *bx);
    by = malloc(np * sizeof *by);
    lab = calloc(np, sizeof *lab);
    if (!px || !py || !sk || !bx || !by || !lab) goto oom;
    for (size_t gi = 0; gi < np; gi++) {
        size_t ng = 0;
        for (size_t i = 0; i < nidx; i++)
            if (gk[i] == (long)gi) grp[ng++] = idx[i];
        const rrec *c = &r->rec[grp[0]];
        char cw[700];
        snprintf(cw, sizeof cw, "%s, point of stage '%.150s'", what, c->stage);
        if ((rc = sel_eval(r, &xs, grp, ng, cw, &px[gi])) ||
            (rc = sel_eval(r, &ys, grp, ng, cw, &py[gi])))
            goto done;
        /* a point with none of the series variables is its stage's own series */
        char *key = key_of(c, series, ns);
        if (key && !key[strspn(key, "\x1f")]) {
            free(key);
            key = strdup(c->base);
        }
        if ((sk[gi] = set_add(&skeys, key)) < 0) goto oom;
        lab[gi] = NULL;
        for (size_t k = 0; k < nl && !lab[gi]; k++) lab[gi] = rec_var(c, labels[k]);
    }
    if (csv) gr_buf_puts(csv, "series,x,y\n");
    for (size_t s = 0; s < skeys.n; s++) {
        size_t n = 0;
        const char *pl[4096];
        int labelled = np <= 4096;
        for (size_t gi = 0; gi < np; gi++)
            if (sk[gi] == (long)s) {
                if (labelled) pl[n] = lab[gi];
                bx[n] = px[gi];
                by[n] = py[gi];
                n++;
            }
        char *sl = key_show(skeys.s[s]);
        int si = gr_svg_scatter(p, sl, bx, by, n);
        if (si < 0) {
            rc = si;
            goto done;
        }
        gr_svg_series_markers(p, si, MARKER_R + 1);
        if (nl && labelled && (rc = gr_svg_point_labels(p, si, pl, n))) goto done;
        for (size_t k = 0; csv && k < n; k++) {
            csv_field(csv, sl);
            csv_pair(csv, bx[k], by[k]);
        }
    }
    goto done;
oom:
    rc = gr_seterr(GR_ENOMEM, "out of memory");
done:
    sel_free(&xs);
    sel_free(&ys);
    set_free(&gkeys);
    set_free(&skeys);
    free(gk);
    free(sk);
    free(grp);
    free(px);
    free(py);
    free(bx);
    free(by);
    free(lab);
    return rc < 0 ? rc : 0;
}

int gr_report_plot(const gr_report *r, const gr_json *spec, const char *what, const char *path,
                   gr_buf *csv)
{
    static const char *const allowed[] = {"file", "title", "kind",   "from",   "where",
                                          "x",    "y",     "series", "label",  "ref_label",
                                          "xlog", "ylog",  "xlabel", "ylabel", NULL};
    int rc = check_spec(spec, what, allowed);
    if (rc) return rc;
    const char *kind = gr_json_get_str(spec, "kind", "line");
    if (strcmp(kind, "line") && strcmp(kind, "scatter"))
        return gr_seterr(GR_EINVAL, "report: %s: kind '%.40s': want line or scatter", what, kind);
    for (const char *const *f = (const char *const[]){"xlog", "ylog", NULL}; *f; f++) {
        const gr_json *b = gr_json_get(spec, *f);
        if (b && b->type != GR_JSON_BOOL)
            return gr_seterr(GR_EINVAL, "report: %s: '%s' must be true or false", what, *f);
    }
    for (const char *const *f =
             (const char *const[]){"title", "x", "y", "ref_label", "xlabel", "ylabel", NULL};
         *f; f++) {
        const gr_json *s = gr_json_get(spec, *f);
        if (s && s->type != GR_JSON_STR)
            return gr_seterr(GR_EINVAL, "report: %s: '%s' must be a string", what, *f);
    }
    size_t *idx, nidx;
    if ((rc = filter(r, spec, what, &idx, &nidx))) return rc;
    gr_svg_plot *p = gr_svg_new(PLOT_W, PLOT_H);
    if (!p) {
        free(idx);
        return gr_errcode();
    }
    rc = !strcmp(kind, "line") ? line_plot(r, spec, what, idx, nidx, p, csv)
                               : scatter_plot(r, spec, what, idx, nidx, p, csv);
    if (!rc) rc = gr_svg_save(p, path);
    if (!rc && csv && csv->oom) rc = gr_seterr(GR_ENOMEM, "out of memory");
    gr_svg_destroy(&p);
    free(idx);
    return rc;
}
