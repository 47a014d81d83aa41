/* cmd_exec: graft exec OP key=value... [--input name=PATH] [-o DIR] — runs one
 * op in-process, without broker, Redis or store; prints its metrics JSON. */
#include "cli.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_jsonb.h"
#include "gr_pipeline.h"
#include "gr_worker.h"
#include "jobs.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char exec_usage[] =
    "usage: graft exec OP [key=value]... [--input NAME=PATH]... [-o DIR] [--threads N]\n"
    "                  [--attempt N] [--store DIR]\n"
    "  values are parsed as JSON when they parse (1, 0.5, true, [1,2], {\"a\":1}), else taken\n"
    "  as strings; --input gives an input parameter a local file or directory (repeat it\n"
    "  for list inputs); -o DIR receives the op's output files (DIR must not exist or be\n"
    "  empty); without -o they are discarded. Prints the metrics JSON.";

/* Sets params[name] = value, or appends to a list input. */
static int put_input(const gr_op *op, gr_json *params, const char *name, const char *path)
{
    int kind = gr_param_input_kind(op, name);
    if (!kind)
        return gr_seterr(GR_EINVAL, "--input %s=%s: '%s' is not an input parameter of op '%s'",
                         name, path, name, op->name);
    char abs[PATH_MAX];
    if (!realpath(path, abs))
        return gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "--input %s=%s: %s", name, path,
                         strerror(errno));
    if (kind == GR_P_INPUT) {
        if (gr_json_get(params, name))
            return gr_seterr(GR_EINVAL, "--input %s: given twice (it takes one artifact)", name);
        return gr_jsonb_set(params, name, gr_jsonb_str(abs));
    }
    gr_json *list = (gr_json *)gr_json_get(params, name);
    if (!list) {
        if (gr_jsonb_set(params, name, gr_jsonb_arr())) return GR_ENOMEM;
        list = (gr_json *)gr_json_get(params, name);
    }
    if (list->type != GR_JSON_ARR)
        return gr_seterr(GR_EINVAL, "--input %s: also given as %s=...", name, name);
    return gr_jsonb_push(list, gr_jsonb_str(abs));
}

int cmd_exec(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') return cli_usage_error("%s", exec_usage);
    const gr_op *op = gr_op_find(argv[1]);
    if (!op) {
        gr_buf known = {0};
        for (size_t i = 0; gr_ops[i]; i++)
            gr_buf_printf(&known, "%s%s", i ? ", " : "", gr_ops[i]->name);
        int rc = cli_usage_error("exec: unknown op '%s' (known: %s)", argv[1],
                                 known.data ? known.data : "none");
        gr_buf_free(&known);
        return rc;
    }
    gr_json *params = gr_jsonb_obj();
    const char *outdir = NULL, *store = NULL;
    int threads = 0, attempt = 1, missing = 0, rc = 0;
    char *tmpbase = NULL, *out = NULL, *work = NULL, *metrics = NULL;
    if (!params) return cli_fail(GR_ENOMEM);
    for (int i = 2; i < argc && !rc; i++) {
        const char *v, *a = argv[i];
        if ((v = jobs_opt(argc, argv, &i, "--input", &missing))) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v) {
                rc = cli_usage_error("exec: --input %s: expected NAME=PATH", v);
                goto done;
            }
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)(eq - v), v);
            if ((rc = put_input(op, params, name, eq + 1))) {
                rc = cli_fail(rc);
                goto done;
            }
        } else if ((v = jobs_opt(argc, argv, &i, "-o", &missing)) ||
                   (v = jobs_opt(argc, argv, &i, "--output", &missing)))
            outdir = v;
        else if ((v = jobs_opt(argc, argv, &i, "--store", &missing)))
            store = v;
        else if ((v = jobs_opt(argc, argv, &i, "--threads", &missing)))
            threads = atoi(v);
        else if ((v = jobs_opt(argc, argv, &i, "--attempt", &missing)))
            attempt = atoi(v);
        else if (missing || a[0] == '-') {
            rc = cli_usage_error("exec: %s: %s\n%s", a,
                                 missing ? "missing value" : "unknown option", exec_usage);
            goto done;
        } else {
            const char *eq = strchr(a, '=');
            if (!eq || eq == a) {
                rc = cli_usage_error("exec: '%s': expected key=value", a);
                goto done;
            }
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)(eq - a), a);
            if (key[0] == '_') {
                rc = cli_usage_error("exec: '%s': names starting with '_' are reserved", key);
                goto done;
            }
            if (gr_param_input_kind(op, key)) {
                rc = cli_usage_error("exec: '%s' is an input: give it with --input %s=PATH", key,
                                     key);
                goto done;
            }
            gr_json *val = gr_json_parse(eq + 1, strlen(eq + 1), NULL);
            if (!val) {
                gr_clearerr();
                val = gr_jsonb_str(eq + 1);
            }
            if (gr_json_get(params, key)) {
                gr_json_free(val);
                rc = cli_usage_error("exec: '%s' given twice", key);
                goto done;
            }
            if (gr_jsonb_set(params, key, val)) {
                rc = cli_fail(GR_ENOMEM);
                goto done;
            }
        }
    }
    /* the output appears under its final name only when the op succeeded */
    if (outdir && !cli_dir_usable(outdir)) {
        rc = cli_usage_error("exec: -o %s: exists and is not an empty directory", outdir);
        goto done;
    }
    if ((rc = cli_work_area(outdir, ".graft-exec-", &tmpbase, &out, &work))) {
        rc = cli_fail(rc);
        goto done;
    }
    char *root = store ? strdup(store) : NULL;
    gr_exec e = {.op = op,
                 .params = params,
                 .outdir = out,
                 .workdir = work,
                 .store = root,
                 .threads = gr_worker_set_threads(threads),
                 .attempt = attempt,
                 .cancel = &cli_cancel,
                 .progress_cb = cli_progress};
    int r = gr_worker_exec(&e, &metrics);
    free(root);
    /* The op names files in the hidden work directory; say which output they
     * were for (a full disk under -o, typically). */
    if (r && outdir && strstr(gr_errmsg(), tmpbase)) gr_adderr(r, "-o %s", outdir);
    if (r) {
        rc = cli_fail(r);
        goto done;
    }
    if (outdir && rename(out, outdir)) {
        rc = cli_fail(
            gr_seterr(GR_EIO, "-o %s: cannot move the output there: %s", outdir, strerror(errno)));
        goto done;
    }
    printf("%s\n", metrics);
done:
    if (tmpbase) gr_fs_rmrf(tmpbase);
    free(tmpbase);
    free(out);
    free(work);
    free(metrics);
    gr_json_free(params);
    return rc;
}
