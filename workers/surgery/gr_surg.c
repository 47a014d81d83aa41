/* gr_surg: inputs as per-tensor sources, outputs, warnings, parameters and
 * the spool shared by the model-surgery ops. */
#include "gr_surg.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_log.h"
#include "gr_lora.h"
#include "gr_mparam.h"
#include "gr_sparse.h"

#include <cblas.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Elements per conversion chunk when a tensor is read by several threads. */
#define READ_CHUNK (1u << 16)

struct gr_src {
    gr_src_kind kind;
    char *path, *role;
    gr_sparse *sp; /* MODEL, DELTA */
    gr_lora *lora; /* LORA */
    gr_src_tensor *t;
    const gr_src_tensor **stored; /* t in storage order */
    size_t n;
    int threads;
};

static int src_tensor_cmp(const void *a, const void *b)
{
    return strcmp(((const gr_src_tensor *)a)->name, ((const gr_src_tensor *)b)->name);
}

gr_src *gr_src_open(const char *path, const char *role)
{
    gr_src *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path)) || !(s->role = strdup(role ? role : path))) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    s->threads = 1;
    if (gr_lora_is_adapter(path)) {
        s->kind = GR_SRC_LORA;
        if (!(s->lora = gr_lora_open(path))) goto fail_ctx;
        s->n = gr_lora_count(s->lora);
        s->t = calloc(s->n ? s->n : 1, sizeof *s->t);
        if (!s->t) goto oom;
        for (size_t i = 0; i < s->n; i++) {
            const gr_lora_entry *e = gr_lora_at(s->lora, i);
            gr_src_tensor *o = &s->t[i];
            o->name = e->target;
            o->dtype = e->kind == GR_LORA_FULL ? e->a->dtype : GR_DT_F32;
            o->ndim = e->ndim;
            memcpy(o->shape, e->shape, sizeof o->shape);
            o->nelem = e->nelem;
            o->theta = e->kind == GR_LORA_FULL;
        }
        /* entries are sorted by target: that is their order */
        if (!(s->stored = malloc((s->n ? s->n : 1) * sizeof *s->stored))) goto oom;
        for (size_t i = 0; i < s->n; i++) s->stored[i] = &s->t[i];
        return s;
    }
    if (!(s->sp = gr_sparse_open(path))) goto fail_ctx;
    s->kind = gr_sparse_is_delta(s->sp) ? GR_SRC_DELTA : GR_SRC_MODEL;
    s->n = gr_sparse_count(s->sp);
    s->t = calloc(s->n ? s->n : 1, sizeof *s->t);
    if (!s->t) goto oom;
    for (size_t i = 0; i < s->n; i++) {
        const gr_sparse_tensor *e = gr_sparse_at(s->sp, i);
        gr_src_tensor *o = &s->t[i];
        o->name = e->name;
        o->dtype = e->dtype;
        o->ndim = e->ndim;
        memcpy(o->shape, e->shape, sizeof o->shape);
        o->nelem = e->nelem;
        o->theta = s->kind == GR_SRC_MODEL;
    }
    qsort(s->t, s->n, sizeof *s->t, src_tensor_cmp);
    if (!(s->stored = malloc((s->n ? s->n : 1) * sizeof *s->stored))) goto oom;
    for (size_t i = 0; i < s->n; i++)
        s->stored[i] = gr_src_find(s, gr_sparse_stored(s->sp, i)->name);
    return s;
oom:
    gr_seterr(GR_ENOMEM, "out of memory");
    goto fail;
fail_ctx:
    gr_adderr(gr_errcode(), "%s", role ? role : path);
fail:
    gr_src_close(&s);
    return NULL;
}

void gr_src_close(gr_src **sp)
{
    if (!sp || !*sp) return;
    gr_src *s = *sp;
    gr_sparse_close(&s->sp);
    gr_lora_close(&s->lora);
    free(s->t);
    free(s->stored);
    free(s->path);
    free(s->role);
    free(s);
    *sp = NULL;
}

gr_src_kind gr_src_kind_of(const gr_src *s)
{
    return s->kind;
}

const char *gr_src_kind_name(gr_src_kind k)
{
    return k == GR_SRC_MODEL ? "model" : k == GR_SRC_DELTA ? "delta" : "lora";
}

const char *gr_src_path(const gr_src *s)
{
    return s->path;
}

const char *gr_src_role(const gr_src *s)
{
    return s->role;
}

const char *gr_src_dir(const gr_src *s)
{
    return s->sp ? gr_ckpt_dir(gr_sparse_ckpt(s->sp)) : gr_lora_dir(s->lora);
}

const gr_json *gr_src_config(const gr_src *s)
{
    return s->sp ? gr_ckpt_config(gr_sparse_ckpt(s->sp)) : NULL;
}

void gr_src_set_threads(gr_src *s, int threads)
{
    s->threads = threads > 0 ? threads : 1;
}

size_t gr_src_count(const gr_src *s)
{
    return s->n;
}

const gr_src_tensor *gr_src_at(const gr_src *s, size_t i)
{
    return i < s->n ? &s->t[i] : NULL;
}

const gr_src_tensor *gr_src_stored(const gr_src *s, size_t i)
{
    return i < s->n ? s->stored[i] : NULL;
}

const gr_src_tensor *gr_src_find(const gr_src *s, const char *name)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, s->t[mid].name);
        if (!c) return &s->t[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* Converts one chunk and combines it with base (mode: READ_RAW, READ_DELTA
 * subtracts base from a θ, READ_THETA adds base to a δ), then drops the
 * chunk's pages: a pass over a model never keeps more than it uses. */
enum { READ_RAW, READ_DELTA, READ_THETA };

static void sub_from(float *restrict dst, const float *restrict base, uint64_t n)
{
#pragma omp simd
    for (uint64_t i = 0; i < n; i++) dst[i] -= base[i];
}

static void add_to(float *restrict dst, const float *restrict base, uint64_t n)
{
#pragma omp simd
    for (uint64_t i = 0; i < n; i++) dst[i] += base[i];
}

static int read_chunk(gr_src *s, const gr_sparse_tensor *st, const gr_src_tensor *t, uint64_t off,
                      uint64_t n, float *dst, const float *base, int mode)
{
    int rc = gr_sparse_read_f32(s->sp, st, off, n, dst);
    if (rc) return rc;
    if (base && mode == READ_DELTA && t->theta)
        sub_from(dst, base, n);
    else if (base && mode == READ_THETA && !t->theta)
        add_to(dst, base, n);
    gr_sparse_release_range(s->sp, st, off, n);
    return 0;
}

static int read_range(gr_src *s, const gr_src_tensor *t, uint64_t off, uint64_t n, float *dst,
                      const float *base, int mode)
{
    if (off > t->nelem || n > t->nelem - off)
        return gr_seterr(GR_EINVAL, "%s: tensor '%s': elements [%llu, %llu) of %llu asked", s->role,
                         t->name, (unsigned long long)off, (unsigned long long)(off + n),
                         (unsigned long long)t->nelem);
    if (s->lora) {
        const gr_lora_entry *e = gr_lora_find(s->lora, t->name);
        int rc;
        if (e->kind == GR_LORA_FULL) {
            rc = gr_tensor_read_f32(e->a, off, n, dst);
        } else if (off || n != t->nelem) {
            return gr_seterr(GR_EUNSUP, "%s: tensor '%s': a LoRA delta is computed whole", s->role,
                             t->name);
        } else {
            rc = gr_lora_delta(e, dst);
        }
        if (rc || !base) return rc;
        if (mode == READ_DELTA && t->theta)
            sub_from(dst, base, n);
        else if (mode == READ_THETA && !t->theta)
            add_to(dst, base, n);
        return 0;
    }
    const gr_sparse_tensor *st = gr_sparse_find(s->sp, t->name);
    if (n <= READ_CHUNK || s->threads <= 1) {
        for (uint64_t a = 0; a < n; a += READ_CHUNK) {
            uint64_t m = n - a < READ_CHUNK ? n - a : READ_CHUNK;
            int rc = read_chunk(s, st, t, off + a, m, dst + a, base ? base + a : NULL, mode);
            if (rc) return rc;
        }
        return 0;
    }
    uint64_t chunks = (n + READ_CHUNK - 1) / READ_CHUNK;
    int rc = 0;
#pragma omp parallel for num_threads(s->threads) schedule(static) reduction(min : rc)
    for (uint64_t c = 0; c < chunks; c++) {
        uint64_t a = c * READ_CHUNK, m = n - a < READ_CHUNK ? n - a : READ_CHUNK;
        int r = read_chunk(s, st, t, off + a, m, dst + a, base ? base + a : NULL, mode);
        if (r < rc) rc = r;
    }
    if (rc) /* the message was set on a worker thread: read again here for it */
        return gr_sparse_read_f32(s->sp, st, off, n, dst) ? gr_errcode() : rc;
    return 0;
}

int gr_src_read(gr_src *s, const gr_src_tensor *t, uint64_t n, float *dst)
{
    return read_range(s, t, 0, n, dst, NULL, READ_RAW);
}

int gr_src_read_delta(gr_src *s, const gr_src_tensor *t, const float *base, uint64_t n, float *dst)
{
    return read_range(s, t, 0, n, dst, base, READ_DELTA);
}

int gr_src_read_theta(gr_src *s, const gr_src_tensor *t, const float *base, uint64_t n, float *dst)
{
    return read_range(s, t, 0, n, dst, base, READ_THETA);
}

int gr_src_read_range(gr_src *s, const gr_src_tensor *t, uint64_t off, uint64_t n, float *dst)
{
    return read_range(s, t, off, n, dst, NULL, READ_RAW);
}

int gr_src_read_delta_range(gr_src *s, const gr_src_tensor *t, const float *base, uint64_t off,
                            uint64_t n, float *dst)
{
    return read_range(s, t, off, n, dst, base, READ_DELTA);
}

int gr_src_read_theta_range(gr_src *s, const gr_src_tensor *t, const float *base, uint64_t off,
                            uint64_t n, float *dst)
{
    return read_range(s, t, off, n, dst, base, READ_THETA);
}

int gr_src_streamable(const gr_src *s, const gr_src_tensor *t)
{
    if (!s->lora) return 1;
    const gr_lora_entry *e = gr_lora_find(s->lora, t->name);
    return e && e->kind == GR_LORA_FULL;
}

const gr_tensor *gr_src_raw(const gr_src *s, const gr_src_tensor *t)
{
    return s->sp ? gr_sparse_dense(s->sp, gr_sparse_find(s->sp, t->name)) : NULL;
}

void gr_src_release(gr_src *s, const gr_src_tensor *t)
{
    if (s->sp) gr_sparse_release(s->sp, gr_sparse_find(s->sp, t->name));
}

int gr_surg_is_vocab_tensor(const char *name)
{
    static const char *const pats[] = {"embed_tokens",    "lm_head",       "wte",
                                       "word_embeddings", "embed_in",      "embed_out",
                                       "output.weight",   "tok_embeddings"};
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++)
        if (strstr(name, pats[i])) return 1;
    return 0;
}

int gr_surg_croppable(const int64_t *a, const int64_t *b, int ndim)
{
    if (ndim < 1 || b[0] < a[0]) return 0;
    for (int d = 1; d < ndim; d++)
        if (a[d] != b[d]) return 0;
    return 1;
}

/* ---- warnings ---- */
void gr_warns_add(gr_warns *w, const char *op, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    GR_WARN(op, "%s", msg);
    if (w->n++ >= GR_WARNS_KEEP) return;
    if (w->json.len) gr_buf_putc(&w->json, ',');
    gr_buf_json_str(&w->json, msg, strlen(msg));
}

void gr_warns_json(const gr_warns *w, gr_buf *b)
{
    gr_buf_printf(b, "\"warnings\":[%s],\"warning_count\":%zu", w->json.data ? w->json.data : "",
                  w->n);
}

void gr_warns_free(gr_warns *w)
{
    gr_buf_free(&w->json);
    w->n = 0;
}

/* ---- parameters ---- */
int gr_surg_dtype_parse(const char *name, const char *what, gr_dtype *out)
{
    static const struct {
        const char *name;
        gr_dtype dt;
    } names[] = {
        {"float32", GR_DT_F32},   {"fp32", GR_DT_F32},    {"F32", GR_DT_F32},
        {"bfloat16", GR_DT_BF16}, {"bf16", GR_DT_BF16},   {"BF16", GR_DT_BF16},
        {"float16", GR_DT_F16},   {"fp16", GR_DT_F16},    {"half", GR_DT_F16},
        {"F16", GR_DT_F16},       {"float64", GR_DT_F64}, {"F64", GR_DT_F64},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i].name)) return *out = names[i].dt, 0;
    return gr_seterr(GR_EINVAL, "%s: unknown dtype '%s' (float32, bfloat16, float16, float64)",
                     what, name);
}

int gr_surg_pattern_match(const char *pattern, const char *name)
{
    if (strpbrk(pattern, "*?[")) return fnmatch(pattern, name, 0) == 0;
    return strstr(name, pattern) != NULL;
}

void gr_surg_strv_free(char ***v)
{
    if (!v || !*v) return;
    for (char **p = *v; *p; p++) free(*p);
    free(*v);
    *v = NULL;
}

int gr_surg_patterns(const gr_json *v, const char *what, char ***out)
{
    *out = NULL;
    size_t n = !v || v->type == GR_JSON_NULL ? 0 : v->type == GR_JSON_STR ? 1 : v->len;
    if (v && v->type != GR_JSON_NULL && v->type != GR_JSON_STR && v->type != GR_JSON_ARR)
        return gr_seterr(GR_EINVAL, "%s must be a string or a list of strings", what);
    char **r = calloc(n + 1, sizeof *r);
    if (!r) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const gr_json *s = v->type == GR_JSON_STR ? v : v->items[i];
        if (s->type != GR_JSON_STR || !*s->str) {
            gr_surg_strv_free(&r);
            return gr_seterr(GR_EINVAL, "%s[%zu] must be a non-empty string", what, i);
        }
        if (!(r[i] = strdup(s->str))) {
            gr_surg_strv_free(&r);
            return gr_seterr(GR_ENOMEM, "out of memory");
        }
    }
    *out = r;
    return 0;
}

int gr_surg_selected(char *const *include, char *const *exclude, const char *name)
{
    int in = !include || !include[0];
    for (char *const *p = include; p && *p && !in; p++) in = gr_surg_pattern_match(*p, name);
    if (!in) return 0;
    for (char *const *p = exclude; p && *p; p++)
        if (gr_surg_pattern_match(*p, name)) return 0;
    return 1;
}

int gr_surg_threads(const gr_op_ctx *ctx)
{
    int t = ctx && ctx->threads > 0 ? ctx->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (t < 1) t = 1;
    openblas_set_num_threads(t);
    return t;
}

long gr_surg_num_layers(const gr_json *config, const char *const *names, size_t n)
{
    static const char *const keys[] = {"num_hidden_layers", "n_layer", "num_layers"};
    for (size_t i = 0; config && i < sizeof keys / sizeof keys[0]; i++) {
        const gr_json *v = gr_json_get(config, keys[i]);
        if (v && v->type == GR_JSON_NUM && v->is_int && v->i > 0) return (long)v->i;
    }
    return gr_mparam_count_layers(names, n);
}

/* ---- outputs ---- */
/* GR_SURG_COPY_CONFIG, GR_SURG_COPY_TOKENIZER or 0 for a file name. */
static int model_file_kind(const char *n)
{
    static const char *const tok[] = {"special_tokens_map.json", "added_tokens.json", "merges.txt",
                                      "preprocessor_config.json"};
    if (!strcmp(n, "config.json") || !strcmp(n, "generation_config.json"))
        return GR_SURG_COPY_CONFIG;
    for (size_t i = 0; i < sizeof tok / sizeof tok[0]; i++)
        if (!strcmp(n, tok[i])) return GR_SURG_COPY_TOKENIZER;
    if (!strncmp(n, "tokenizer", 9) || !strncmp(n, "vocab.", 6) || !strncmp(n, "chat_template", 13))
        return GR_SURG_COPY_TOKENIZER;
    size_t len = strlen(n);
    return len > 6 && !strcmp(n + len - 6, ".model") ? GR_SURG_COPY_TOKENIZER : 0;
}

static int copy_one(const char *from_dir, const char *outdir, const char *name)
{
    char *src = gr_fs_join(from_dir, name), *dst = gr_fs_join(outdir, name);
    char *tmp = NULL;
    int rc = 0;
    if (!src || !dst) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto out;
    }
    size_t tl = strlen(outdir) + strlen(name) + 48;
    if (!(tmp = malloc(tl))) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(tmp, tl, "%s/.%s.tmp.%ld", outdir, name, (long)getpid());
    unlink(tmp);
    if ((rc = gr_fs_copy_file(src, tmp, 0644))) goto out;
    if (rename(tmp, dst)) {
        rc = gr_seterr(GR_EIO, "%s: cannot rename into place: %s", dst, strerror(errno));
        unlink(tmp);
    }
out:
    free(src);
    free(dst);
    free(tmp);
    return rc;
}

int gr_surg_copy_model_files(const char *from_dir, const char *outdir, int what)
{
    DIR *d = opendir(from_dir);
    if (!d) return gr_seterr(GR_EIO, "%s: cannot list: %s", from_dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !(model_file_kind(e->d_name) & what)) continue;
        char *p = gr_fs_join(from_dir, e->d_name);
        struct stat sb;
        int reg = p && stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
        free(p);
        if (reg) rc = copy_one(from_dir, outdir, e->d_name);
    }
    closedir(d);
    if (!rc) rc = gr_fs_fsync_dir(outdir);
    return rc;
}

void gr_surg_clean_outdir(const char *outdir)
{
    DIR *d = outdir ? opendir(outdir) : NULL;
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = gr_fs_join(outdir, e->d_name);
        if (p) gr_fs_rmrf(p);
        free(p);
    }
    closedir(d);
}

/* ---- spool ---- */
#define SPOOL_COPY_CHUNK (4u << 20)

struct gr_spool {
    int fd;
    uint64_t size;
    char *buf; /* SPOOL_COPY_CHUNK bytes for copies */
};

gr_spool *gr_spool_new(const char *dir)
{
    gr_spool *s = calloc(1, sizeof *s);
    if (!s) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    const char *d = dir && *dir ? dir : getenv("TMPDIR");
    if (!d || !*d) d = "/tmp";
    s->fd = open(d, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (s->fd < 0) { /* file systems without O_TMPFILE */
        char *t = gr_fs_join(d, ".graft-spool-XXXXXX");
        if (t && (s->fd = mkostemp(t, O_CLOEXEC)) >= 0) unlink(t);
        free(t);
    }
    if (s->fd < 0) {
        gr_seterr(GR_EIO, "%s: cannot create a scratch file: %s", d, strerror(errno));
        free(s);
        return NULL;
    }
    return s;
}

void gr_spool_destroy(gr_spool **sp)
{
    if (!sp || !*sp) return;
    if ((*sp)->fd >= 0) close((*sp)->fd);
    free((*sp)->buf);
    free(*sp);
    *sp = NULL;
}

int gr_spool_write(gr_spool *s, const void *p, size_t n, uint64_t *off)
{
    if (off) *off = s->size;
    int rc = gr_fs_write_all(s->fd, p, n, "scratch file");
    if (!rc) s->size += n;
    return rc;
}

int gr_spool_read(gr_spool *s, uint64_t off, uint64_t len, void *dst)
{
    char *p = dst;
    while (len) {
        ssize_t r =
            pread(s->fd, p, len > SPOOL_COPY_CHUNK ? SPOOL_COPY_CHUNK : (size_t)len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return gr_seterr(GR_EIO, "scratch file: read failed: %s",
                             r < 0 ? strerror(errno) : "unexpected end");
        p += r;
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return 0;
}

int gr_spool_copy(gr_spool *s, uint64_t off, uint64_t len, gr_stw *w)
{
    if (!s->buf && !(s->buf = malloc(SPOOL_COPY_CHUNK)))
        return gr_seterr(GR_ENOMEM, "out of memory");
    while (len) {
        size_t m = len > SPOOL_COPY_CHUNK ? SPOOL_COPY_CHUNK : (size_t)len;
        int rc = gr_spool_read(s, off, m, s->buf);
        if (!rc) rc = gr_stw_write(w, s->buf, m);
        if (rc) return rc;
        off += m;
        len -= m;
    }
    return 0;
}
