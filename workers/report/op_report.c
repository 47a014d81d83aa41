/* report op: gathers the metrics of many stages (a list of stages, or every
 * variant of a matrix stage) into report.csv, report.md (Markdown tables)
 * and SVG plots, with the numbers of each plot beside it as CSV. */
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_jsonb.h"
#include "gr_op.h"
#include "gr_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPORT_CSV   "report.csv"
#define REPORT_MD    "report.md"
#define RESULT_JSON  "result.json" /* what evaluate writes into its output tree */
#define MAX_FILENAME 100
#define MAX_METRICS  256

static const gr_param report_params[] = {
    {"inputs", GR_P_INPUTS, 1, "stages whose metrics are gathered (a matrix stage: every variant)"},
    {"title", GR_P_STR, 0, "heading of report.md (default \"graft report\")"},
    {"metrics", GR_P_ANY, 0,
     "metric names for report.csv and the table of all stages (default: every metric but "
     "timings)"},
    {"tables", GR_P_ANY, 0,
     "list of pivot tables: {title, from, where, rows, cols, value | values, mean, digits}"},
    {"plots", GR_P_ANY, 0,
     "list of plots: {file, title, kind: line|scatter, from, where, x, y, series, label, "
     "ref_label, xlog, ylog, xlabel, ylabel}"},
    {NULL, 0, 0, NULL},
};

/* The metrics of input i: result.json's "metrics" in its tree (or the JSON
 * file itself), then the broker's metrics for names not there. Returns a new
 * object (caller frees) or NULL with the error set. */
static gr_json *input_metrics(const char *path, const gr_json *desc)
{
    gr_json *own = NULL;
    char *file = gr_fs_is_dir(path) ? gr_fs_join(path, RESULT_JSON) : strdup(path);
    if (!file) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    size_t n = strlen(file);
    if (gr_fs_exists(file) && n > 5 && !strcmp(file + n - 5, ".json")) {
        gr_json *j = gr_json_parse_file(file);
        if (!j) {
            gr_adderr(gr_errcode(), "report");
            free(file);
            return NULL;
        }
        const gr_json *m = gr_json_get(j, "metrics");
        if (j->type == GR_JSON_OBJ && (!m || m->type != GR_JSON_OBJ)) m = j;
        if (m && m->type == GR_JSON_OBJ) own = gr_jsonb_copy(m);
        gr_json_free(j);
    }
    free(file);
    if (!own && !(own = gr_jsonb_obj())) return NULL;
    const gr_json *bm = gr_json_get(desc, "metrics");
    for (size_t i = 0; bm && bm->type == GR_JSON_OBJ && i < bm->len; i++) {
        if (gr_json_get(own, bm->keys[i])) continue;
        if (gr_jsonb_set(own, bm->keys[i], gr_jsonb_copy(bm->items[i]))) {
            gr_json_free(own);
            gr_seterr(GR_ENOMEM, "out of memory");
            return NULL;
        }
    }
    return own;
}

static int gather(gr_op_ctx *ctx, gr_report *r)
{
    const gr_json *in = gr_json_get(ctx->params, "inputs");
    const gr_json *desc = gr_json_get(ctx->params, "_inputs");
    if (!in || in->type != GR_JSON_ARR || !in->len)
        return gr_seterr(GR_EINVAL, "report: parameter 'inputs' must list at least one stage");
    if (desc && (desc->type != GR_JSON_ARR || desc->len != in->len)) desc = NULL;
    for (size_t i = 0; i < in->len; i++) {
        const char *path = in->items[i]->type == GR_JSON_STR ? in->items[i]->str : NULL;
        if (!path) return gr_seterr(GR_EINVAL, "report: inputs[%zu] is not a path", i);
        const gr_json *d = desc ? desc->items[i] : NULL;
        const char *stage = gr_json_get_str(d, "stage", NULL);
        if (!stage) {
            /* without a broker: the input's file name stands for the stage */
            const char *slash = strrchr(path, '/');
            stage = slash && slash[1] ? slash + 1 : path;
        }
        gr_json *m = input_metrics(path, d);
        if (!m) return gr_errcode();
        int rc =
            gr_report_add(r, stage, gr_json_get_str(d, "op", NULL), gr_json_get(d, "params"), m);
        gr_json_free(m);
        if (rc) return rc;
    }
    return 0;
}

/* A plot's file name: letters, digits, '.', '_', '-', not starting with '.',
 * ".svg" appended when missing. */
static int plot_file(const gr_json *spec, size_t i, char *out, size_t cap)
{
    const gr_json *f = gr_json_get(spec, "file");
    if (!f) {
        snprintf(out, cap, "plot%zu.svg", i + 1);
        return 0;
    }
    if (f->type != GR_JSON_STR || !f->len || f->len > MAX_FILENAME || f->str[0] == '.' ||
        strspn(f->str, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
            f->len)
        return gr_seterr(GR_EINVAL,
                         "report: plots[%zu]: 'file' must be a plain file name of letters, "
                         "digits, '.', '_' and '-' (at most %d)",
                         i, MAX_FILENAME);
    size_t n = f->len;
    snprintf(out, cap, "%s%s", f->str, n > 4 && !strcmp(f->str + n - 4, ".svg") ? "" : ".svg");
    return 0;
}

static int write_file(const char *dir, const char *name, const gr_buf *b)
{
    char *p = gr_fs_join(dir, name);
    if (!p) return gr_seterr(GR_ENOMEM, "out of memory");
    int rc = gr_fs_write_atomic(p, b->data ? b->data : "", b->len, 0644);
    free(p);
    return rc;
}

static int report_run(gr_op_ctx *ctx)
{
    gr_report *r = gr_report_new();
    gr_buf md = {0}, csv = {0}, pcsv = {0}, met = {0};
    const char *metrics[MAX_METRICS], *title;
    size_t nm = 0;
    int rc;
    char **files = NULL;
    size_t nfiles = 0;
    if (!r) return gr_errcode();
    if ((rc = gr_op_str(ctx, "title", "graft report", &title))) goto done;
    const gr_json *jm = gr_json_get(ctx->params, "metrics");
    const gr_json *tables = gr_json_get(ctx->params, "tables");
    const gr_json *plots = gr_json_get(ctx->params, "plots");
    if (jm) {
        int ok = jm->type == GR_JSON_ARR && jm->len <= MAX_METRICS;
        for (size_t i = 0; ok && i < jm->len; i++)
            if ((ok = jm->items[i]->type == GR_JSON_STR)) metrics[nm++] = jm->items[i]->str;
        if (!ok) {
            rc = gr_seterr(GR_EINVAL,
                           "report: parameter 'metrics' must be a list of at most %d "
                           "metric names",
                           MAX_METRICS);
            goto done;
        }
    }
    if ((tables && tables->type != GR_JSON_ARR) || (plots && plots->type != GR_JSON_ARR)) {
        rc = gr_seterr(GR_EINVAL, "report: parameters 'tables' and 'plots' must be lists of "
                                  "objects");
        goto done;
    }
    if ((rc = gather(ctx, r))) goto done;

    gr_buf_puts(&md, "# ");
    gr_buf_puts(&md, title);
    gr_buf_puts(&md, "\n\n");
    for (size_t i = 0; tables && i < tables->len; i++) {
        char what[32];
        snprintf(what, sizeof what, "tables[%zu]", i);
        if ((rc = gr_report_md_table(r, tables->items[i], what, &md))) goto done;
    }
    if (plots && plots->len && !(files = calloc(plots->len, sizeof *files))) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; plots && i < plots->len; i++) {
        char what[32], name[MAX_FILENAME + 8], dname[MAX_FILENAME + 16];
        snprintf(what, sizeof what, "plots[%zu]", i);
        if ((rc = plot_file(plots->items[i], i, name, sizeof name))) goto done;
        for (size_t k = 0; k < nfiles; k++)
            if (!strcmp(files[k], name)) {
                rc = gr_seterr(GR_EINVAL, "report: %s: file '%s' is used by another plot", what,
                               name);
                goto done;
            }
        if (!(files[nfiles] = strdup(name))) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            goto done;
        }
        nfiles++;
        char *path = gr_fs_join(ctx->outdir, name);
        if (!path) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            goto done;
        }
        gr_buf_reset(&pcsv);
        rc = gr_report_plot(r, plots->items[i], what, path, &pcsv);
        free(path);
        if (rc) goto done;
        snprintf(dname, sizeof dname, "%.*s.csv", (int)(strlen(name) - 4), name);
        if ((rc = write_file(ctx->outdir, dname, &pcsv))) goto done;
        const char *pt = gr_json_get_str(plots->items[i], "title", name);
        gr_buf_printf(&md, "![%s](%s)\n\n", pt, name);
    }
    gr_buf_puts(&md, "### All stages\n\n");
    if ((rc = gr_report_md_all(r, jm ? metrics : NULL, nm, &md))) goto done;
    if ((rc = gr_report_csv(r, jm ? metrics : NULL, nm, &csv))) goto done;
    if (md.oom) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = write_file(ctx->outdir, REPORT_CSV, &csv)) ||
        (rc = write_file(ctx->outdir, REPORT_MD, &md)))
        goto done;
    gr_buf_printf(&met, "{\"stages\":%zu,\"tables\":%zu,\"plots\":%zu}", gr_report_count(r),
                  tables ? tables->len : 0, nfiles);
    rc = met.oom ? gr_seterr(GR_ENOMEM, "out of memory") : gr_op_set_metrics(ctx, met.data);
done:
    for (size_t k = 0; k < nfiles; k++) free(files[k]);
    free(files);
    gr_buf_free(&md);
    gr_buf_free(&csv);
    gr_buf_free(&pcsv);
    gr_buf_free(&met);
    gr_report_destroy(&r);
    return rc;
}

const gr_op gr_op_report = {
    .name = "report",
    .version = 1,
    .summary = "gather the metrics of many stages into report.csv, report.md tables and SVG plots",
    .params = report_params,
    .open_params = 0,
    .run = report_run,
};
