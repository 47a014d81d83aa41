/* cmd_merge: graft merge CONFIG.yml OUT_DIR — runs a mergekit merge config
 * with the merge op in-process (hub models fetched first with the fetch op). */
#include "cli.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_jsonb.h"
#include "gr_mergekit.h"
#include "gr_worker.h"
#include "jobs.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char merge_usage[] =
    "usage: graft merge CONFIG.yml OUT_DIR [--threads N] [--seed N] [--shard-size BYTES]\n"
    "                   [--store DIR] [--json] [--print-params]\n"
    "  runs a mergekit config (merge_method, base_model, models with parameters, parameters,\n"
    "  dtype, out_dtype, tokenizer_source) with graft's merge op; models are local paths, or\n"
    "  hub names (org/name or hf://org/name) fetched first. OUT_DIR must not exist or be\n"
    "  empty; it appears only when the merge succeeded. --print-params prints the merge op's\n"
    "  parameters (the equivalent pipeline stage) and exits.";

/* Whether ref names a hub repository: hf://..., or org/name[@rev] that is
 * not a local path. */
static int is_hub_ref(const char *ref)
{
    if (!strncmp(ref, "hf://", 5)) return 1;
    if (ref[0] == '/' || ref[0] == '.' || gr_fs_exists(ref)) return 0;
    const char *slash = strchr(ref, '/');
    if (!slash || slash == ref || strchr(slash + 1, '/')) return 0;
    for (const char *p = ref; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-_./@", *p)) return 0;
    return 1;
}

/* Makes ref a local absolute path: an existing path as it is, a hub
 * repository fetched into work/fetch-N with the fetch op. */
static int resolve_ref(gr_json *holder, const char *key, size_t idx, const char *work,
                       const char *store, int threads, int *nfetch)
{
    gr_json *slot = (gr_json *)(key ? gr_json_get(holder, key) : holder->items[idx]);
    if (!slot || slot->type != GR_JSON_STR) return 0;
    const char *ref = slot->str;
    char abs[PATH_MAX], *fetched = NULL;
    int rc = 0;
    if (!is_hub_ref(ref)) {
        if (!realpath(ref, abs))
            return gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "model '%s': %s", ref,
                             strerror(errno));
    } else {
        const gr_op *fetch = gr_op_find("fetch");
        if (!fetch)
            return gr_seterr(GR_EUNSUP, "model '%s': a hub model, and this build has no fetch op",
                             ref);
        char url[PATH_MAX + 8], name[32];
        snprintf(url, sizeof url, "%s%s", strncmp(ref, "hf://", 5) ? "hf://" : "", ref);
        snprintf(name, sizeof name, "fetch-%d", (*nfetch)++);
        gr_json *fp = gr_jsonb_obj();
        if (!fp || !(fetched = gr_fs_join(work, name)) ||
            gr_jsonb_set(fp, "url", gr_jsonb_str(url))) {
            gr_json_free(fp);
            free(fetched);
            return gr_seterr(GR_ENOMEM, "out of memory");
        }
        if (isatty(2)) fprintf(stderr, "graft merge: fetching %s\n", url);
        if (mkdir(fetched, 0755)) {
            rc = gr_seterr(GR_EIO, "%s: %s", fetched, strerror(errno));
        } else {
            gr_exec e = {.op = fetch,
                         .params = fp,
                         .outdir = fetched,
                         .workdir = work,
                         .store = store,
                         .threads = threads,
                         .attempt = 1,
                         .cancel = &cli_cancel,
                         .progress_cb = cli_progress};
            char *met = NULL;
            rc = gr_worker_exec(&e, &met);
            free(met);
            if (rc) gr_adderr(rc, "model '%s'", ref);
        }
        gr_json_free(fp);
        if (rc) {
            free(fetched);
            return rc;
        }
        snprintf(abs, sizeof abs, "%s", fetched);
        free(fetched);
    }
    gr_json *s = gr_jsonb_str(abs);
    if (!s) return gr_seterr(GR_ENOMEM, "out of memory");
    if (key) return gr_jsonb_set(holder, key, s);
    gr_json_free(holder->items[idx]);
    holder->items[idx] = s;
    return 0;
}

int cmd_merge(int argc, char **argv)
{
    const char *cfg = NULL, *outdir = NULL, *store = NULL;
    int threads = 0, json = 0, print_params = 0, missing = 0, rc = 0, nfetch = 0;
    long long seed = -1, shard = -1;
    char *tmpbase = NULL, *out = NULL, *work = NULL, *metrics = NULL;
    gr_json *params = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v, *a = argv[i];
        if ((v = jobs_opt(argc, argv, &i, "--threads", &missing)))
            threads = atoi(v);
        else if ((v = jobs_opt(argc, argv, &i, "--seed", &missing)))
            seed = atoll(v);
        else if ((v = jobs_opt(argc, argv, &i, "--shard-size", &missing)))
            shard = atoll(v);
        else if ((v = jobs_opt(argc, argv, &i, "--store", &missing)))
            store = v;
        else if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--print-params"))
            print_params = 1;
        else if (missing || (a[0] == '-' && a[1]))
            return cli_usage_error("merge: %s: %s\n%s", a,
                                   missing ? "missing value" : "unknown option", merge_usage);
        else if (!cfg)
            cfg = a;
        else if (!outdir)
            outdir = a;
        else
            return cli_usage_error("merge: unexpected argument '%s'\n%s", a, merge_usage);
    }
    if (!cfg || (!outdir && !print_params)) return cli_usage_error("%s", merge_usage);
    if (seed < -1 || shard < -1)
        return cli_usage_error("merge: --seed and --shard-size must be >= 0");
    if (!(params = gr_mergekit_load(cfg))) return cli_fail(gr_errcode());
    if ((seed >= 0 && gr_jsonb_set(params, "seed", gr_jsonb_int(seed))) ||
        (shard >= 0 && gr_jsonb_set(params, "shard_size", gr_jsonb_int(shard)))) {
        rc = cli_fail(GR_ENOMEM);
        goto done;
    }
    if (print_params) {
        char *s = gr_jsonb_canon(params);
        if (!s) {
            rc = cli_fail(GR_ENOMEM);
            goto done;
        }
        printf("%s\n", s);
        free(s);
        goto done;
    }
    if (!cli_dir_usable(outdir)) {
        rc = cli_usage_error("merge: %s exists and is not an empty directory", outdir);
        goto done;
    }
    const gr_op *op = gr_op_find("merge");
    if (!op) {
        rc = cli_fail(gr_seterr(GR_EUNSUP, "this build has no merge op"));
        goto done;
    }
    /* the result is built beside OUT_DIR and renamed into place at the end */
    if ((rc = cli_work_area(outdir, ".graft-merge-", &tmpbase, &out, &work))) {
        rc = cli_fail(rc);
        goto done;
    }
    threads = gr_worker_set_threads(threads);
    char *root = store                   ? strdup(store)
                 : getenv("GRAFT_STORE") ? strdup(getenv("GRAFT_STORE"))
                                         : NULL;
    gr_json *models = (gr_json *)gr_json_get(params, "models");
    rc = resolve_ref(params, "base", 0, work, root, threads, &nfetch);
    for (size_t i = 0; !rc && models && i < models->len; i++)
        rc = resolve_ref(models, NULL, i, work, root, threads, &nfetch);
    if (!rc) rc = resolve_ref(params, "tokenizer_source", 0, work, root, threads, &nfetch);
    if (rc) {
        free(root);
        rc = cli_fail(rc);
        goto done;
    }
    gr_exec e = {.op = op,
                 .params = params,
                 .outdir = out,
                 .workdir = work,
                 .store = root,
                 .threads = threads,
                 .attempt = 1,
                 .cancel = &cli_cancel,
                 .progress_cb = cli_progress};
    rc = gr_worker_exec(&e, &metrics);
    free(root);
    /* The op names files in the hidden work directory; say which OUT_DIR they
     * were for (a full disk there, typically). */
    if (rc && strstr(gr_errmsg(), tmpbase)) gr_adderr(rc, "%s", outdir);
    if (rc) {
        rc = cli_fail(rc);
        goto done;
    }
    if (!cli_dir_usable(outdir) || (gr_fs_is_dir(outdir) && rmdir(outdir)) || rename(out, outdir) ||
        gr_fs_fsync_parent(outdir)) {
        rc = cli_fail(gr_seterr(GR_EIO, "%s: cannot move the result into place: %s", outdir,
                                strerror(errno)));
        goto done;
    }
    gr_json *m = gr_json_parse(metrics, strlen(metrics), "metrics");
    if (json) {
        printf("%s\n", metrics);
    } else if (m) {
        const gr_json *w = gr_json_get(m, "warnings");
        for (size_t i = 0; w && w->type == GR_JSON_ARR && i < w->len; i++)
            if (w->items[i]->type == GR_JSON_STR)
                fprintf(stderr, "graft merge: warning: %s\n", w->items[i]->str);
        printf("merged %lld models with %s into %s: %lld tensors, %lld elements, %.2f s, %lld "
               "warnings\n",
               models ? (long long)models->len : 0LL, gr_json_get_str(m, "method", "?"), outdir,
               (long long)gr_json_get_int(m, "tensors", 0),
               (long long)gr_json_get_num(m, "elements", 0), gr_json_get_num(m, "seconds", 0),
               (long long)gr_json_get_int(m, "warning_count", 0));
    }
    gr_json_free(m);
done:
    if (tmpbase) gr_fs_rmrf(tmpbase);
    free(tmpbase);
    free(out);
    free(work);
    free(metrics);
    gr_json_free(params);
    return rc;
}
