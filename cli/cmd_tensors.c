/* cmd_tensors: `graft tensors inspect|diff|stats` — look inside safetensors
 * files and checkpoints (single files, directories, sharded with an index). */
#include "cli.h"
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_st.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK ((size_t)1 << 20) /* elements read per step: memory stays bounded */

static const char usage_text[] =
    "usage: graft tensors inspect PATH [--json]\n"
    "       graft tensors diff A B [--atol X] [--json]\n"
    "       graft tensors stats PATH [--json]\n"
    "PATH is a .safetensors file or a checkpoint directory (model.safetensors, or shards\n"
    "with model.safetensors.index.json). diff exits 0 when every tensor is present on both\n"
    "sides with the same dtype and shape and |a - b| <= atol (default 0) everywhere, 1\n"
    "otherwise. stats: mean, std (population), min, max and L2 norm over the finite values;\n"
    "zero fraction over all values; NaN and Inf counted apart.\n";

typedef struct {
    const char *args[2];
    int nargs;
    int json;
    double atol;
} topts;

static int parse(int argc, char **argv, topts *o, int nwant, int allow_atol)
{
    memset(o, 0, sizeof *o);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (allow_atol && (!strcmp(a, "--atol") || !strncmp(a, "--atol=", 7))) {
            const char *v = a[6] == '=' ? a + 7 : (i + 1 < argc ? argv[++i] : NULL);
            char *end;
            if (!v) return cli_usage_error("tensors %s: --atol needs a value", argv[1]);
            o->atol = strtod(v, &end);
            if (end == v || *end || !(o->atol >= 0) || isinf(o->atol))
                return cli_usage_error("tensors %s: --atol '%s' is not a finite number >= 0",
                                       argv[1], v);
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            return -1;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("tensors %s: unknown option '%s'", argv[1], a);
        } else if (o->nargs == nwant) {
            return cli_usage_error("tensors %s: takes %d path%s", argv[1], nwant,
                                   nwant > 1 ? "s" : "");
        } else {
            o->args[o->nargs++] = a;
        }
    }
    if (o->nargs != nwant)
        return cli_usage_error("tensors %s: takes %d path%s (graft tensors --help)", argv[1], nwant,
                               nwant > 1 ? "s" : "");
    return 0;
}

static const char *shape_str(const gr_tensor *t, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

/* The tensor's file relative to the checkpoint directory. */
static const char *rel_file(const gr_ckpt *c, const gr_tensor *t)
{
    const char *dir = gr_ckpt_dir(c);
    size_t n = strlen(dir);
    if (!strncmp(t->file, dir, n) && t->file[n] == '/') return t->file + n + 1;
    const char *slash = strrchr(t->file, '/');
    return slash ? slash + 1 : t->file;
}

static int can_read_f64(gr_dtype dt)
{
    switch (dt) {
    case GR_DT_F64:
    case GR_DT_F32:
    case GR_DT_F16:
    case GR_DT_BF16:
    case GR_DT_BOOL:
    case GR_DT_U8:
    case GR_DT_I8:
    case GR_DT_I16:
    case GR_DT_U16:
    case GR_DT_I32:
    case GR_DT_U32:
    case GR_DT_I64:
    case GR_DT_U64:
        return 1;
    default:
        return 0;
    }
}

/* Elements [off, off+n) of t as doubles (tmp: n floats of scratch). */
static int read_f64(const gr_tensor *t, uint64_t off, size_t n, double *dst, float *tmp)
{
    const unsigned char *p = (const unsigned char *)t->data + off * (gr_dtype_bits(t->dtype) / 8);
    switch (t->dtype) {
    case GR_DT_F64:
        memcpy(dst, p, n * sizeof *dst);
        return 0;
    case GR_DT_F32:
    case GR_DT_F16:
    case GR_DT_BF16: {
        int rc = gr_tensor_read_f32(t, off, n, tmp);
        if (rc) return rc;
        for (size_t i = 0; i < n; i++) dst[i] = tmp[i];
        return 0;
    }
#define INTS(T)                                                                                    \
    for (size_t i = 0; i < n; i++) {                                                               \
        T v;                                                                                       \
        memcpy(&v, p + i * sizeof v, sizeof v);                                                    \
        dst[i] = (double)v;                                                                        \
    }                                                                                              \
    return 0
    case GR_DT_BOOL:
    case GR_DT_U8:
        INTS(uint8_t);
    case GR_DT_I8:
        INTS(int8_t);
    case GR_DT_I16:
        INTS(int16_t);
    case GR_DT_U16:
        INTS(uint16_t);
    case GR_DT_I32:
        INTS(int32_t);
    case GR_DT_U32:
        INTS(uint32_t);
    case GR_DT_I64:
        INTS(int64_t);
    case GR_DT_U64:
        INTS(uint64_t);
#undef INTS
    default:
        return gr_seterr(GR_EUNSUP, "%s: tensor '%s': no numeric reading of %s", t->file, t->name,
                         gr_dtype_name(t->dtype));
    }
}

static void put_num(gr_buf *b, const char *key, double v, int comma)
{
    gr_buf_printf(b, "%s\"%s\": ", comma ? ", " : "", key);
    gr_buf_json_num(b, v);
}

/* ---- inspect ---- */

static int tensors_inspect(int argc, char **argv)
{
    topts o;
    int rc = parse(argc, argv, &o, 1, 0);
    if (rc) return rc < 0 ? 0 : rc;
    gr_ckpt *c = gr_ckpt_open(o.args[0]);
    if (!c) return cli_fail(gr_errcode());
    size_t n = gr_ckpt_count(c);
    uint64_t params = 0, bytes = 0;
    size_t wname = 4, wshape = 5;
    char sb[256];
    for (size_t i = 0; i < n; i++) {
        const gr_tensor *t = gr_ckpt_tensor(c, i);
        params += t->nelem;
        bytes += t->nbytes;
        if (strlen(t->name) > wname) wname = strlen(t->name);
        if (strlen(shape_str(t, sb, sizeof sb)) > wshape) wshape = strlen(sb);
    }
    const gr_st *first = gr_ckpt_file(c, 0);
    size_t nmeta = first ? gr_st_meta_count(first) : 0;
    if (o.json) {
        gr_buf b = {0};
        gr_buf_puts(&b, "{\"path\": ");
        gr_buf_json_str(&b, o.args[0], strlen(o.args[0]));
        gr_buf_puts(&b, ", \"files\": [");
        for (size_t f = 0; f < gr_ckpt_nfiles(c); f++) {
            const char *p = gr_st_path(gr_ckpt_file(c, f));
            const char *slash = strrchr(p, '/');
            p = slash ? slash + 1 : p;
            if (f) gr_buf_puts(&b, ", ");
            gr_buf_json_str(&b, p, strlen(p));
        }
        gr_buf_puts(&b, "],\n \"tensors\": [");
        for (size_t i = 0; i < n; i++) {
            const gr_tensor *t = gr_ckpt_tensor(c, i);
            gr_buf_puts(&b, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
            gr_buf_json_str(&b, t->name, strlen(t->name));
            gr_buf_printf(&b, ", \"dtype\": \"%s\", \"shape\": [", gr_dtype_name(t->dtype));
            for (int d = 0; d < t->ndim; d++)
                gr_buf_printf(&b, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            gr_buf_printf(&b, "], \"bytes\": %llu, \"file\": ", (unsigned long long)t->nbytes);
            const char *f = rel_file(c, t);
            gr_buf_json_str(&b, f, strlen(f));
            gr_buf_putc(&b, '}');
        }
        gr_buf_puts(&b, "],\n \"metadata\": {");
        for (size_t i = 0; i < nmeta; i++) {
            const char *k = gr_st_meta_key(first, i), *v = gr_st_meta_get(first, k);
            if (i) gr_buf_puts(&b, ", ");
            gr_buf_json_str(&b, k, strlen(k));
            gr_buf_puts(&b, ": ");
            gr_buf_json_str(&b, v, strlen(v));
        }
        gr_buf_printf(&b, "},\n \"parameters\": %llu, \"total_bytes\": %llu}\n",
                      (unsigned long long)params, (unsigned long long)bytes);
        if (b.oom) {
            gr_buf_free(&b);
            gr_ckpt_close(&c);
            return cli_fail(gr_seterr(GR_ENOMEM, "out of memory"));
        }
        fwrite(b.data, 1, b.len, stdout);
        gr_buf_free(&b);
    } else {
        printf("%s: %zu tensor%s in %zu file%s\n", o.args[0], n, n == 1 ? "" : "s",
               gr_ckpt_nfiles(c), gr_ckpt_nfiles(c) == 1 ? "" : "s");
        printf("%-*s  %-7s  %-*s  %12s  %s\n", (int)wname, "name", "dtype", (int)wshape, "shape",
               "bytes", "file");
        for (size_t i = 0; i < n; i++) {
            const gr_tensor *t = gr_ckpt_tensor(c, i);
            printf("%-*s  %-7s  %-*s  %12llu  %s\n", (int)wname, t->name, gr_dtype_name(t->dtype),
                   (int)wshape, shape_str(t, sb, sizeof sb), (unsigned long long)t->nbytes,
                   rel_file(c, t));
        }
        if (nmeta) printf("metadata:\n");
        for (size_t i = 0; i < nmeta; i++) {
            const char *k = gr_st_meta_key(first, i);
            printf("  %s = %s\n", k, gr_st_meta_get(first, k));
        }
        printf("parameters: %llu\ntotal bytes: %llu\n", (unsigned long long)params,
               (unsigned long long)bytes);
    }
    gr_ckpt_close(&c);
    return 0;
}

/* ---- diff ---- */

typedef struct {
    double maxdiff;   /* largest |a - b| (Inf when NaN meets a number) */
    uint64_t argmax;  /* its element index */
    uint64_t ndiffer; /* elements with |a - b| > atol */
} cmp_result;

static int compare_values(const gr_tensor *a, const gr_tensor *b, double atol, cmp_result *r,
                          double *da, double *db, float *tmp)
{
    memset(r, 0, sizeof *r);
    for (uint64_t off = 0; off < a->nelem; off += CHUNK) {
        size_t k = a->nelem - off < CHUNK ? (size_t)(a->nelem - off) : CHUNK;
        int rc = read_f64(a, off, k, da, tmp);
        if (!rc) rc = read_f64(b, off, k, db, tmp);
        if (rc) return rc;
        for (size_t i = 0; i < k; i++) {
            double d;
            if (isnan(da[i]) || isnan(db[i]))
                d = isnan(da[i]) && isnan(db[i]) ? 0 : INFINITY;
            else
                d = da[i] == db[i] ? 0 : fabs(da[i] - db[i]);
            if (d > atol) r->ndiffer++;
            if (d > r->maxdiff) {
                r->maxdiff = d;
                r->argmax = off + i;
            }
        }
    }
    return 0;
}

static int same_shape(const gr_tensor *a, const gr_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

static int tensors_diff(int argc, char **argv)
{
    topts o;
    int rc = parse(argc, argv, &o, 2, 1);
    if (rc) return rc < 0 ? 0 : rc;
    gr_ckpt *A = gr_ckpt_open(o.args[0]), *B = NULL;
    if (!A) return cli_fail(gr_errcode());
    if (!(B = gr_ckpt_open(o.args[1]))) {
        rc = cli_fail(gr_errcode());
        gr_ckpt_close(&A);
        return rc;
    }
    double *da = malloc(CHUNK * sizeof *da), *db = malloc(CHUNK * sizeof *db);
    float *tmp = malloc(CHUNK * sizeof *tmp);
    gr_buf js = {0};
    if (!da || !db || !tmp) {
        rc = cli_fail(gr_seterr(GR_ENOMEM, "out of memory"));
        goto done;
    }
    size_t na = gr_ckpt_count(A), nb = gr_ckpt_count(B), i = 0, j = 0;
    size_t n_equal = 0, n_differ = 0, only_a = 0, only_b = 0;
    char s1[256], s2[256], line[1024];
    if (o.json) gr_buf_puts(&js, "{\"tensors\": [");
    while (i < na || j < nb) {
        const gr_tensor *a = i < na ? gr_ckpt_tensor(A, i) : NULL;
        const gr_tensor *b = j < nb ? gr_ckpt_tensor(B, j) : NULL;
        int c = !a ? 1 : !b ? -1 : strcmp(a->name, b->name);
        const char *name = c <= 0 ? a->name : b->name;
        const char *status;
        double maxdiff = NAN;
        line[0] = 0;
        if (c < 0) {
            status = "only_a";
            only_a++;
            snprintf(line, sizeof line, "only in %s", o.args[0]);
            i++;
        } else if (c > 0) {
            status = "only_b";
            only_b++;
            snprintf(line, sizeof line, "only in %s", o.args[1]);
            j++;
        } else {
            i++;
            j++;
            if (!same_shape(a, b)) {
                status = "shape";
                snprintf(line, sizeof line, "shape %s vs %s", shape_str(a, s1, sizeof s1),
                         shape_str(b, s2, sizeof s2));
            } else if (a->dtype == b->dtype && a->nbytes == b->nbytes &&
                       !memcmp(a->data, b->data, a->nbytes)) {
                status = "equal";
                maxdiff = 0;
                snprintf(line, sizeof line, "equal");
            } else if (!can_read_f64(a->dtype) || !can_read_f64(b->dtype)) {
                status = a->dtype != b->dtype ? "dtype" : "differ";
                snprintf(line, sizeof line, "%s%s%s%s", a->dtype != b->dtype ? "dtype " : "",
                         a->dtype != b->dtype ? gr_dtype_name(a->dtype) : "",
                         a->dtype != b->dtype ? " vs " : "bytes differ",
                         a->dtype != b->dtype ? gr_dtype_name(b->dtype) : "");
            } else {
                cmp_result r;
                if ((rc = compare_values(a, b, o.atol, &r, da, db, tmp))) {
                    rc = cli_fail(rc);
                    goto done;
                }
                maxdiff = r.maxdiff;
                char dt[64] = "";
                if (a->dtype != b->dtype)
                    snprintf(dt, sizeof dt, "dtype %s vs %s, ", gr_dtype_name(a->dtype),
                             gr_dtype_name(b->dtype));
                if (a->dtype != b->dtype)
                    status = "dtype";
                else
                    status = r.ndiffer ? "differ" : "equal";
                if (!strcmp(status, "equal"))
                    snprintf(line, sizeof line, "equal within atol (max abs diff %.6g at %llu)",
                             r.maxdiff, (unsigned long long)r.argmax);
                else
                    snprintf(line, sizeof line,
                             "%smax abs diff %.6g at element %llu; %llu of %llu elements differ "
                             "by more than %g",
                             dt, r.maxdiff, (unsigned long long)r.argmax,
                             (unsigned long long)r.ndiffer, (unsigned long long)a->nelem, o.atol);
            }
            if (!strcmp(status, "equal"))
                n_equal++;
            else
                n_differ++;
        }
        if (o.json) {
            if (n_equal + n_differ + only_a + only_b > 1) gr_buf_puts(&js, ",");
            gr_buf_puts(&js, "\n  {\"name\": ");
            gr_buf_json_str(&js, name, strlen(name));
            gr_buf_printf(&js, ", \"status\": \"%s\"", status);
            put_num(&js, "max_abs_diff", maxdiff, 1);
            gr_buf_puts(&js, ", \"detail\": ");
            gr_buf_json_str(&js, line, strlen(line));
            gr_buf_putc(&js, '}');
        } else {
            printf("%s: %s\n", name, line);
        }
    }
    int same = n_differ == 0 && only_a == 0 && only_b == 0;
    if (o.json) {
        gr_buf_printf(&js,
                      "],\n \"equal\": %zu, \"differ\": %zu, \"only_a\": %zu, \"only_b\": %zu, "
                      "\"atol\": ",
                      n_equal, n_differ, only_a, only_b);
        gr_buf_json_num(&js, o.atol);
        gr_buf_printf(&js, ", \"same\": %s}\n", same ? "true" : "false");
        if (js.oom) {
            rc = cli_fail(gr_seterr(GR_ENOMEM, "out of memory"));
            goto done;
        }
        fwrite(js.data, 1, js.len, stdout);
    } else {
        printf("%zu equal, %zu differ, %zu only in %s, %zu only in %s (atol %g)\n", n_equal,
               n_differ, only_a, o.args[0], only_b, o.args[1], o.atol);
    }
    rc = same ? 0 : 1;
done:
    gr_buf_free(&js);
    free(da);
    free(db);
    free(tmp);
    gr_ckpt_close(&A);
    gr_ckpt_close(&B);
    return rc;
}

/* ---- stats ---- */

typedef struct {
    uint64_t n, finite, zeros, nans, infs;
    double mean, m2, min, max, sumsq;
} tstats;

/* Streams t chunk by chunk; per chunk an exact two-pass mean and sum of
 * squared deviations, merged with Chan et al.'s pairwise update (stable for
 * large means, unlike sum and sum of squares). */
static int tensor_stats(const gr_tensor *t, tstats *s, double *buf, float *tmp)
{
    memset(s, 0, sizeof *s);
    s->min = INFINITY;
    s->max = -INFINITY;
    s->n = t->nelem;
    for (uint64_t off = 0; off < t->nelem; off += CHUNK) {
        size_t k = t->nelem - off < CHUNK ? (size_t)(t->nelem - off) : CHUNK;
        int rc = read_f64(t, off, k, buf, tmp);
        if (rc) return rc;
        uint64_t cn = 0;
        double csum = 0;
        for (size_t i = 0; i < k; i++) {
            double v = buf[i];
            if (v == 0) s->zeros++;
            if (isnan(v)) {
                s->nans++;
                continue;
            }
            if (isinf(v)) {
                s->infs++;
                continue;
            }
            cn++;
            csum += v;
            if (v < s->min) s->min = v;
            if (v > s->max) s->max = v;
            s->sumsq += v * v;
        }
        if (!cn) continue;
        double cmean = csum / (double)cn, cm2 = 0;
        for (size_t i = 0; i < k; i++)
            if (isfinite(buf[i])) cm2 += (buf[i] - cmean) * (buf[i] - cmean);
        double tot = (double)(s->finite + cn), delta = cmean - s->mean;
        s->mean += delta * (double)cn / tot;
        s->m2 += cm2 + delta * delta * (double)s->finite * (double)cn / tot;
        s->finite += cn;
    }
    return 0;
}

static int tensors_stats(int argc, char **argv)
{
    topts o;
    int rc = parse(argc, argv, &o, 1, 0);
    if (rc) return rc < 0 ? 0 : rc;
    gr_ckpt *c = gr_ckpt_open(o.args[0]);
    if (!c) return cli_fail(gr_errcode());
    double *buf = malloc(CHUNK * sizeof *buf);
    float *tmp = malloc(CHUNK * sizeof *tmp);
    gr_buf js = {0};
    if (!buf || !tmp) {
        rc = cli_fail(gr_seterr(GR_ENOMEM, "out of memory"));
        goto done;
    }
    size_t n = gr_ckpt_count(c), wname = 4;
    for (size_t i = 0; i < n; i++)
        if (strlen(gr_ckpt_tensor(c, i)->name) > wname) wname = strlen(gr_ckpt_tensor(c, i)->name);
    if (o.json)
        gr_buf_puts(&js, "{\"tensors\": [");
    else
        printf("%-*s  %-7s  %12s  %12s  %12s  %12s  %12s  %6s  %s  %s\n", (int)wname, "name",
               "dtype", "mean", "std", "min", "max", "l2", "zeros", "nan", "inf");
    for (size_t i = 0; i < n; i++) {
        const gr_tensor *t = gr_ckpt_tensor(c, i);
        tstats s;
        int ok = can_read_f64(t->dtype);
        if (ok && (rc = tensor_stats(t, &s, buf, tmp))) {
            rc = cli_fail(rc);
            goto done;
        }
        double mean = ok && s.finite ? s.mean : NAN;
        double sd = ok && s.finite ? sqrt(s.m2 / (double)s.finite) : NAN;
        double mn = ok && s.finite ? s.min : NAN, mx = ok && s.finite ? s.max : NAN;
        double l2 = ok ? sqrt(s.sumsq) : NAN;
        double zf = ok && s.n ? (double)s.zeros / (double)s.n : NAN;
        if (o.json) {
            gr_buf_puts(&js, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
            gr_buf_json_str(&js, t->name, strlen(t->name));
            gr_buf_printf(&js, ", \"dtype\": \"%s\", \"count\": %llu", gr_dtype_name(t->dtype),
                          (unsigned long long)t->nelem);
            put_num(&js, "mean", mean, 1);
            put_num(&js, "std", sd, 1);
            put_num(&js, "min", mn, 1);
            put_num(&js, "max", mx, 1);
            put_num(&js, "l2", l2, 1);
            put_num(&js, "zero_fraction", zf, 1);
            if (ok)
                gr_buf_printf(&js, ", \"nan\": %llu, \"inf\": %llu}", (unsigned long long)s.nans,
                              (unsigned long long)s.infs);
            else
                gr_buf_puts(&js, ", \"nan\": null, \"inf\": null, \"note\": \"dtype not read\"}");
        } else if (!ok) {
            printf("%-*s  %-7s  (no statistics for this dtype)\n", (int)wname, t->name,
                   gr_dtype_name(t->dtype));
        } else {
            printf("%-*s  %-7s  %12.6g  %12.6g  %12.6g  %12.6g  %12.6g  %6.4f  %llu  %llu\n",
                   (int)wname, t->name, gr_dtype_name(t->dtype), mean, sd, mn, mx, l2, zf,
                   (unsigned long long)s.nans, (unsigned long long)s.infs);
        }
    }
    if (o.json) {
        gr_buf_puts(&js, "]}\n");
        if (js.oom) {
            rc = cli_fail(gr_seterr(GR_ENOMEM, "out of memory"));
            goto done;
        }
        fwrite(js.data, 1, js.len, stdout);
    }
    rc = 0;
done:
    gr_buf_free(&js);
    free(buf);
    free(tmp);
    gr_ckpt_close(&c);
    return rc;
}

int cmd_tensors(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "inspect")) return tensors_inspect(argc, argv);
    if (!strcmp(argv[1], "diff")) return tensors_diff(argc, argv);
    if (!strcmp(argv[1], "stats")) return tensors_stats(argc, argv);
    return cli_usage_error("tensors: unknown subcommand '%s' (inspect, diff or stats)", argv[1]);
}
