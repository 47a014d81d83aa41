/* gr_lora: PEFT LoRA adapters read as deltas (s·B·A with OpenBLAS) and deltas
 * factored into adapters by truncated SVD (LAPACK). */
#include "gr_lora.h"
#include "gr_err.h"

#include <cblas.h>
#include <float.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* PEFT's LoraConfig defaults. */
#define PEFT_DEFAULT_R     8
#define PEFT_DEFAULT_ALPHA 8.0

typedef struct entry_priv {
    gr_lora_entry pub;
    char *target, *module;
} entry_priv;

struct gr_lora {
    char *dir;
    gr_json *config;
    gr_st *st;
    entry_priv *e;
    size_t n;
};

/* Roles of the stored tensors. */
enum { R_A, R_B, R_BBIAS, R_EMB_A, R_EMB_B, R_FULL };

typedef struct lpart {
    char *module; /* owned */
    char *target; /* owned: for R_FULL the tensor name, else NULL */
    int role;
    const gr_tensor *t;
} lpart;

static int lpart_cmp(const void *a, const void *b)
{
    const lpart *x = a, *y = b;
    int c = strcmp(x->module, y->module);
    return c ? c : x->role - y->role;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const entry_priv *)a)->pub.target, ((const entry_priv *)b)->pub.target);
}

int gr_lora_is_adapter(const char *path)
{
    struct stat sb;
    char buf[4096];
    if (!path || stat(path, &sb) || !S_ISDIR(sb.st_mode)) return 0;
    if ((size_t)snprintf(buf, sizeof buf, "%s/%s", path, GR_LORA_CONFIG) >= sizeof buf) return 0;
    return stat(buf, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Translates a Python regex to POSIX extended syntax (the escapes PEFT users
 * write in patterns: \d \w \s and their negations). */
static char *py_to_posix(const char *key)
{
    size_t n = strlen(key);
    char *o = malloc(n * 16 + 32);
    if (!o) return NULL;
    char *p = o;
    p += sprintf(p, "^(.*\\.)?(");
    for (size_t i = 0; i < n; i++) {
        if (key[i] == '\\' && i + 1 < n) {
            const char *rep = NULL;
            switch (key[i + 1]) {
            case 'd':
                rep = "[0-9]";
                break;
            case 'D':
                rep = "[^0-9]";
                break;
            case 'w':
                rep = "[A-Za-z0-9_]";
                break;
            case 'W':
                rep = "[^A-Za-z0-9_]";
                break;
            case 's':
                rep = "[[:space:]]";
                break;
            case 'S':
                rep = "[^[:space:]]";
                break;
            }
            if (rep) {
                p += sprintf(p, "%s", rep);
                i++;
                continue;
            }
            *p++ = key[i++];
        }
        *p++ = key[i];
    }
    sprintf(p, ")$");
    return o;
}

int gr_lora_pattern_match(const char *key, const char *module)
{
    if (!strcmp(key, module)) return 1;
    char *re = py_to_posix(key);
    if (!re) return gr_seterr(GR_ENOMEM, "out of memory");
    regex_t rx;
    int rc = regcomp(&rx, re, REG_EXTENDED | REG_NOSUB);
    free(re);
    if (rc)
        return gr_seterr(GR_EINVAL, "pattern '%s' is not a regular expression graft reads", key);
    rc = regexec(&rx, module, 0, NULL, 0) == 0;
    regfree(&rx);
    return rc;
}

/* Value for module from a PEFT pattern object (first matching key in file
 * order, exact names first), or def. */
static int pattern_value(const gr_json *pat, const char *module, double def, double *out,
                         const char *what, const char *file)
{
    *out = def;
    if (!pat || pat->type == GR_JSON_NULL) return 0;
    if (pat->type != GR_JSON_OBJ)
        return gr_seterr(GR_EFORMAT, "%s: '%s' must be an object", file, what);
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < pat->len; i++) {
            int m = pass == 0 ? !strcmp(pat->keys[i], module)
                              : gr_lora_pattern_match(pat->keys[i], module);
            if (m < 0) return gr_adderr(m, "%s: %s", file, what);
            if (!m) continue;
            if (pat->items[i]->type != GR_JSON_NUM)
                return gr_seterr(GR_EFORMAT, "%s: %s['%s'] must be a number", file, what,
                                 pat->keys[i]);
            *out = pat->items[i]->num;
            return 0;
        }
    return 0;
}

/* Splits a stored name (after the base_model.model. prefix) into module and
 * role. Returns 0, or GR_EFORMAT/GR_EUNSUP with a message. */
static int classify(const char *file, const char *full, const char *rest, lpart *p)
{
    static const struct {
        const char *marker;
        int role;
    } marks[] = {
        {".lora_A.", R_A},
        {".lora_B.", R_B},
        {".lora_embedding_A", R_EMB_A},
        {".lora_embedding_B", R_EMB_B},
    };
    if (strstr(rest, "lora_magnitude_vector"))
        return gr_seterr(GR_EUNSUP, "%s: tensor '%s': DoRA adapters are not supported", file, full);
    for (size_t k = 0; k < sizeof marks / sizeof marks[0]; k++) {
        const char *m = strstr(rest, marks[k].marker);
        if (!m) continue;
        const char *tail = m + strlen(marks[k].marker);
        int role = marks[k].role;
        if (role == R_A || role == R_B) {
            /* "weight", "bias" (lora_B with lora_bias), or "<adapter>.weight" */
            const char *dot = strrchr(tail, '.');
            const char *last = dot ? dot + 1 : tail;
            if (!strcmp(last, "bias") && role == R_B)
                role = R_BBIAS;
            else if (strcmp(last, "weight"))
                return gr_seterr(GR_EFORMAT, "%s: tensor '%s': unexpected LoRA tensor name", file,
                                 full);
        } else if (*tail && (*tail != '.' || strchr(tail + 1, '.'))) {
            return gr_seterr(GR_EFORMAT, "%s: tensor '%s': unexpected LoRA tensor name", file,
                             full);
        }
        p->module = strndup(rest, (size_t)(m - rest));
        p->role = role;
        return p->module ? 0 : gr_seterr(GR_ENOMEM, "out of memory");
    }
    if (strstr(rest, "lora_"))
        return gr_seterr(GR_EUNSUP, "%s: tensor '%s': unsupported LoRA tensor kind", file, full);
    const char *dot = strrchr(rest, '.');
    p->module = dot ? strndup(rest, (size_t)(dot - rest)) : strdup("");
    p->target = strdup(rest);
    p->role = R_FULL;
    return p->module && p->target ? 0 : gr_seterr(GR_ENOMEM, "out of memory");
}

static char *cat3(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

static int make_entries(gr_lora *l, lpart *parts, size_t np, const char *file)
{
    const gr_json *cfg = l->config;
    double r0 = (double)gr_json_get_int(cfg, "r", PEFT_DEFAULT_R);
    double alpha0 = gr_json_get_num(cfg, "lora_alpha", PEFT_DEFAULT_ALPHA);
    int rslora = gr_json_get_bool(cfg, "use_rslora", 0);
    int fifo = gr_json_get_bool(cfg, "fan_in_fan_out", 0);
    const gr_json *rpat = gr_json_get(cfg, "rank_pattern");
    const gr_json *apat = gr_json_get(cfg, "alpha_pattern");
    int rc;
    l->e = calloc(np ? np : 1, sizeof *l->e);
    if (!l->e) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < np;) {
        size_t j = i;
        const gr_tensor *slot[R_FULL + 1] = {0};
        while (j < np && !strcmp(parts[j].module, parts[i].module)) {
            if (parts[j].role != R_FULL) slot[parts[j].role] = parts[j].t;
            j++;
        }
        const char *mod = parts[i].module;
        /* whole tensors first (each one entry) */
        for (size_t k = i; k < j; k++) {
            if (parts[k].role != R_FULL) continue;
            entry_priv *e = &l->e[l->n++];
            const gr_tensor *t = parts[k].t;
            e->target = strdup(parts[k].target);
            e->module = strdup(mod);
            if (!e->target || !e->module) return gr_seterr(GR_ENOMEM, "out of memory");
            e->pub.kind = GR_LORA_FULL;
            e->pub.ndim = t->ndim;
            memcpy(e->pub.shape, t->shape, sizeof e->pub.shape);
            e->pub.nelem = t->nelem;
            e->pub.scale = 1.0;
            e->pub.a = t;
        }
        int lin = slot[R_A] || slot[R_B], emb = slot[R_EMB_A] || slot[R_EMB_B];
        if (lin && emb)
            return gr_seterr(GR_EFORMAT, "%s: module '%s' has both lora_A/B and lora_embedding_A/B",
                             file, mod);
        if (slot[R_BBIAS] && !lin)
            return gr_seterr(GR_EFORMAT, "%s: module '%s': lora_B.bias without lora_A/lora_B", file,
                             mod);
        if (lin || emb) {
            const gr_tensor *A = lin ? slot[R_A] : slot[R_EMB_A];
            const gr_tensor *B = lin ? slot[R_B] : slot[R_EMB_B];
            if (!A || !B)
                return gr_seterr(GR_EFORMAT, "%s: module '%s' has %s but no %s", file, mod,
                                 A ? (lin ? "lora_A" : "lora_embedding_A")
                                   : (lin ? "lora_B" : "lora_embedding_B"),
                                 A ? (lin ? "lora_B" : "lora_embedding_B")
                                   : (lin ? "lora_A" : "lora_embedding_A"));
            if (A->ndim != 2 || B->ndim != 2)
                return gr_seterr(GR_EUNSUP,
                                 "%s: module '%s': lora_A/lora_B must be 2-D (convolution "
                                 "adapters are not supported)",
                                 file, mod);
            if (!gr_dtype_is_float(A->dtype) || !gr_dtype_is_float(B->dtype))
                return gr_seterr(GR_EFORMAT, "%s: module '%s': lora tensors of dtype %s", file, mod,
                                 gr_dtype_name(gr_dtype_is_float(A->dtype) ? B->dtype : A->dtype));
            double r, alpha;
            if ((rc = pattern_value(rpat, mod, r0, &r, "rank_pattern", l->dir)) ||
                (rc = pattern_value(apat, mod, alpha0, &alpha, "alpha_pattern", l->dir)))
                return rc;
            if (A->shape[0] != B->shape[1] || (double)A->shape[0] != r || r < 1)
                return gr_seterr(GR_EFORMAT,
                                 "%s: module '%s': rank disagrees: lora_A has %lld rows, lora_B "
                                 "%lld columns, the config says r = %g",
                                 file, mod, (long long)A->shape[0], (long long)B->shape[1], r);
            entry_priv *e = &l->e[l->n++];
            e->target = cat3(mod, ".", "weight");
            e->module = strdup(mod);
            if (!e->target || !e->module) return gr_seterr(GR_ENOMEM, "out of memory");
            e->pub.kind = lin ? GR_LORA_LINEAR : GR_LORA_EMBEDDING;
            e->pub.rank = (int)r;
            e->pub.alpha = alpha;
            e->pub.scale = rslora ? alpha / sqrt(r) : alpha / r;
            e->pub.transpose = emb || fifo;
            e->pub.ndim = 2;
            e->pub.shape[0] = e->pub.transpose ? A->shape[1] : B->shape[0];
            e->pub.shape[1] = e->pub.transpose ? B->shape[0] : A->shape[1];
            e->pub.nelem = (uint64_t)A->shape[1] * (uint64_t)B->shape[0];
            e->pub.a = A;
            e->pub.b = B;
            if (slot[R_BBIAS]) {
                const gr_tensor *bb = slot[R_BBIAS];
                if (bb->ndim != 1 || bb->shape[0] != B->shape[0])
                    return gr_seterr(GR_EFORMAT, "%s: module '%s': lora_B.bias must be [%lld]",
                                     file, mod, (long long)B->shape[0]);
                entry_priv *eb = &l->e[l->n++];
                eb->pub = e->pub;
                eb->target = cat3(mod, ".", "bias");
                eb->module = strdup(mod);
                if (!eb->target || !eb->module) return gr_seterr(GR_ENOMEM, "out of memory");
                eb->pub.kind = GR_LORA_BIAS;
                eb->pub.transpose = 0;
                eb->pub.ndim = 1;
                eb->pub.shape[0] = bb->shape[0];
                eb->pub.shape[1] = 0;
                eb->pub.nelem = (uint64_t)bb->shape[0];
                eb->pub.a = NULL;
                eb->pub.b = bb;
            }
        }
        i = j;
    }
    for (size_t i = 0; i < l->n; i++) {
        l->e[i].pub.target = l->e[i].target;
        l->e[i].pub.module = l->e[i].module;
    }
    qsort(l->e, l->n, sizeof *l->e, entry_cmp);
    for (size_t i = 0; i + 1 < l->n; i++)
        if (!strcmp(l->e[i].pub.target, l->e[i + 1].pub.target))
            return gr_seterr(GR_EFORMAT, "%s: tensor '%s' is changed twice (LoRA and a full copy)",
                             file, l->e[i].pub.target);
    return 0;
}

gr_lora *gr_lora_open(const char *dir)
{
    gr_lora *l = calloc(1, sizeof *l);
    lpart *parts = NULL;
    size_t np = 0;
    char *cfgpath = NULL, *wpath = NULL;
    if (!l) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    l->dir = strdup(dir);
    cfgpath = cat3(dir, "/", GR_LORA_CONFIG);
    wpath = cat3(dir, "/", GR_LORA_WEIGHTS);
    if (!l->dir || !cfgpath || !wpath) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    l->config = gr_json_parse_file(cfgpath);
    if (!l->config) goto fail;
    if (l->config->type != GR_JSON_OBJ) {
        gr_seterr(GR_EFORMAT, "%s: not a JSON object", cfgpath);
        goto fail;
    }
    const char *pt = gr_json_get_str(l->config, "peft_type", "LORA");
    if (strcmp(pt, "LORA")) {
        gr_seterr(GR_EUNSUP, "%s: peft_type is '%s', only LORA adapters are supported", cfgpath,
                  pt);
        goto fail;
    }
    if (gr_json_get_bool(l->config, "use_dora", 0)) {
        gr_seterr(GR_EUNSUP, "%s: use_dora is true: DoRA adapters are not supported", cfgpath);
        goto fail;
    }
    const gr_json *r = gr_json_get(l->config, "r");
    if (r && (r->type != GR_JSON_NUM || !r->is_int || r->i < 1 || r->i > INT_MAX)) {
        gr_seterr(GR_EFORMAT, "%s: 'r' must be a positive integer", cfgpath);
        goto fail;
    }
    const gr_json *al = gr_json_get(l->config, "lora_alpha");
    if (al && al->type != GR_JSON_NUM) {
        gr_seterr(GR_EFORMAT, "%s: 'lora_alpha' must be a number", cfgpath);
        goto fail;
    }
    struct stat sb;
    if (stat(wpath, &sb)) {
        char *bin = cat3(dir, "/", "adapter_model.bin");
        int has_bin = bin && stat(bin, &sb) == 0;
        free(bin);
        if (has_bin) {
            gr_seterr(GR_EUNSUP,
                      "%s: only adapter_model.bin (a pickle) is present; graft reads "
                      "adapter_model.safetensors",
                      dir);
            goto fail;
        }
    }
    l->st = gr_st_open(wpath);
    if (!l->st) goto fail;
    size_t nt = gr_st_count(l->st);
    parts = calloc(nt ? nt : 1, sizeof *parts);
    if (!parts) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    size_t plen = strlen(GR_LORA_PREFIX);
    for (size_t i = 0; i < nt; i++) {
        const gr_tensor *t = gr_st_tensor(l->st, i);
        if (strncmp(t->name, GR_LORA_PREFIX, plen)) {
            gr_seterr(GR_EFORMAT, "%s: tensor '%s' does not start with '%s'", wpath, t->name,
                      GR_LORA_PREFIX);
            goto fail;
        }
        parts[np].t = t;
        if (classify(wpath, t->name, t->name + plen, &parts[np])) goto fail;
        np++;
    }
    qsort(parts, np, sizeof *parts, lpart_cmp);
    for (size_t i = 0; i + 1 < np; i++)
        if (parts[i].role != R_FULL && parts[i].role == parts[i + 1].role &&
            !strcmp(parts[i].module, parts[i + 1].module)) {
            gr_seterr(GR_EFORMAT, "%s: module '%s' has two tensors of the same LoRA role", wpath,
                      parts[i].module);
            goto fail;
        }
    if (make_entries(l, parts, np, wpath)) goto fail;
    for (size_t i = 0; i < np; i++) free(parts[i].module), free(parts[i].target);
    free(parts);
    free(cfgpath);
    free(wpath);
    return l;
fail:
    for (size_t i = 0; i < np; i++) free(parts[i].module), free(parts[i].target);
    /* classify may have allocated for the part being added */
    if (parts && np < gr_st_count(l->st)) free(parts[np].module), free(parts[np].target);
    free(parts);
    free(cfgpath);
    free(wpath);
    gr_lora_close(&l);
    return NULL;
}

void gr_lora_close(gr_lora **lp)
{
    if (!lp || !*lp) return;
    gr_lora *l = *lp;
    for (size_t i = 0; i < l->n; i++) free(l->e[i].target), free(l->e[i].module);
    free(l->e);
    gr_st_close(&l->st);
    gr_json_free(l->config);
    free(l->dir);
    free(l);
    *lp = NULL;
}

const gr_json *gr_lora_config(const gr_lora *l)
{
    return l->config;
}

const char *gr_lora_dir(const gr_lora *l)
{
    return l->dir;
}

size_t gr_lora_count(const gr_lora *l)
{
    return l->n;
}

const gr_lora_entry *gr_lora_at(const gr_lora *l, size_t i)
{
    return i < l->n ? &l->e[i].pub : NULL;
}

const gr_lora_entry *gr_lora_find(const gr_lora *l, const char *target)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(target, l->e[mid].pub.target);
        if (!c) return &l->e[mid].pub;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static int load_f32(const gr_tensor *t, float **out)
{
    *out = malloc((size_t)(t->nelem ? t->nelem : 1) * sizeof(float));
    if (!*out) return gr_seterr(GR_ENOMEM, "out of memory");
    int rc = gr_tensor_read_f32(t, 0, t->nelem, *out);
    if (rc) free(*out), *out = NULL;
    return rc;
}

/* Loads A and B as fp32 (the dispatch both delta versions share). */
static int load_ab(const gr_lora_entry *e, float **a, float **b)
{
    *a = *b = NULL;
    if (e->kind == GR_LORA_FULL)
        return gr_seterr(GR_EINVAL,
                         "tensor '%s': a full tensor of the adapter; its delta needs "
                         "the base",
                         e->target);
    int rc = load_f32(e->b, b);
    if (!rc && e->kind != GR_LORA_BIAS) rc = load_f32(e->a, a);
    if (rc) free(*b), *b = NULL;
    return rc;
}

int gr_lora_delta(const gr_lora_entry *e, float *dst)
{
    float *a, *b;
    int rc = load_ab(e, &a, &b);
    if (rc) return rc;
    if (e->kind == GR_LORA_BIAS) {
        for (uint64_t i = 0; i < e->nelem; i++) dst[i] = (float)(e->scale * b[i]);
    } else {
        /* A [r, in], B [out, r] */
        int r = e->rank;
        int in = (int)e->a->shape[1], out = (int)e->b->shape[0];
        float s = (float)e->scale;
        if (!e->transpose) /* delta [out, in] = s·B·A */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, s, b, r, a, in, 0.0f,
                        dst, in);
        else /* delta [in, out] = s·Aᵀ·Bᵀ */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, in, out, r, s, a, in, b, r, 0.0f,
                        dst, out);
    }
    free(a);
    free(b);
    return 0;
}

int gr_lora_delta_ref(const gr_lora_entry *e, float *dst)
{
    float *a, *b;
    int rc = load_ab(e, &a, &b);
    if (rc) return rc;
    if (e->kind == GR_LORA_BIAS) {
        for (uint64_t i = 0; i < e->nelem; i++) dst[i] = (float)(e->scale * (double)b[i]);
    } else {
        int64_t r = e->rank, in = e->a->shape[1], out = e->b->shape[0];
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++) {
                double acc = 0;
                for (int64_t k = 0; k < r; k++) acc += (double)b[o * r + k] * a[k * in + i];
                float v = (float)(e->scale * acc);
                if (e->transpose)
                    dst[i * out + o] = v;
                else
                    dst[o * in + i] = v;
            }
    }
    free(a);
    free(b);
    return 0;
}

int gr_lora_factor(const float *delta, int64_t rows, int64_t cols, int max_rank,
                   double abs_threshold, double rel_threshold, float **a, float **b, int *rank,
                   float **sv, double *resid)
{
    float *work = NULL, *s = NULL, *u = NULL, *vt = NULL;
    int rc = 0;
    *a = *b = NULL;
    *rank = 0;
    if (sv) *sv = NULL;
    if (resid) *resid = 0;
    if (rows < 1 || cols < 1 || rows > INT_MAX || cols > INT_MAX ||
        (uint64_t)rows > SIZE_MAX / sizeof(float) / (uint64_t)cols)
        return gr_seterr(GR_EINVAL, "cannot factor a [%lld, %lld] matrix", (long long)rows,
                         (long long)cols);
    if (max_rank < 1) return gr_seterr(GR_EINVAL, "rank must be at least 1, not %d", max_rank);
    int m = (int)rows, n = (int)cols, k = m < n ? m : n;
    work = malloc((size_t)m * (size_t)n * sizeof *work);
    s = malloc((size_t)k * sizeof *s);
    u = malloc((size_t)m * (size_t)k * sizeof *u);
    vt = malloc((size_t)k * (size_t)n * sizeof *vt);
    if (!work || !s || !u || !vt) {
        rc = gr_seterr(GR_ENOMEM, "out of memory factoring a [%d, %d] matrix", m, n);
        goto out;
    }
    memcpy(work, delta, (size_t)m * (size_t)n * sizeof *work);
    lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', m, n, work, n, s, u, k, vt, n);
    if (info > 0) { /* divide and conquer did not converge: the QR iteration may */
        float *superb = malloc((size_t)(k > 1 ? k - 1 : 1) * sizeof *superb);
        if (!superb) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(work, delta, (size_t)m * (size_t)n * sizeof *work);
        info = LAPACKE_sgesvd(LAPACK_ROW_MAJOR, 'S', 'S', m, n, work, n, s, u, k, vt, n, superb);
        free(superb);
    }
    if (info != 0) {
        rc = gr_seterr(info < 0 ? GR_EINVAL : GR_EIO, "SVD of a [%d, %d] matrix failed (info %d)",
                       m, n, (int)info);
        goto out;
    }
    /* numerical rank tolerance (as numpy's matrix_rank) plus the user's */
    double smax = k ? s[0] : 0;
    double tol = smax * (m > n ? m : n) * FLT_EPSILON;
    if (abs_threshold > tol) tol = abs_threshold;
    if (rel_threshold > 0 && rel_threshold * smax > tol) tol = rel_threshold * smax;
    int r = 0;
    while (r < k && r < max_rank && s[r] > tol) r++;
    double dropped = 0;
    for (int i = r; i < k; i++) dropped += (double)s[i] * s[i];
    if (resid) *resid = sqrt(dropped);
    if (r) {
        *a = malloc((size_t)r * (size_t)n * sizeof **a);
        *b = malloc((size_t)m * (size_t)r * sizeof **b);
        if (!*a || !*b) {
            free(*a), free(*b);
            *a = *b = NULL;
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            goto out;
        }
        for (int i = 0; i < r; i++) {
            float q = sqrtf(s[i]);
            for (int j = 0; j < n; j++) (*a)[(size_t)i * n + j] = q * vt[(size_t)i * n + j];
        }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < r; j++)
                (*b)[(size_t)i * r + j] = u[(size_t)i * k + j] * sqrtf(s[j]);
    }
    *rank = r;
    if (sv) *sv = s, s = NULL;
out:
    free(work);
    free(s);
    free(u);
    free(vt);
    return rc;
}
