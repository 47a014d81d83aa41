/* echo: a test op that writes its parameters as JSON (data flow through a
 * DAG). Output tree: params.json = the parameters in canonical JSON, keys
 * starting with '_' dropped, `input` and each entry of `inputs` replaced by what that
 * input holds: the parsed params.json of an upstream echo, the list of file
 * names of another directory, or {"sha256", "size"} of a file. */
#include "gr_op.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_jsonb.h"
#include "gr_sha256.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ECHO_MAX_INPUT_JSON (16u << 20)

static const gr_param echo_params[] = {
    {"input", GR_P_INPUT, 0, "a stage or artifact whose content is echoed"},
    {"inputs", GR_P_INPUTS, 0, "stages or artifacts whose content is echoed"},
    {NULL, 0, 0, NULL},
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* What one input holds, as a JSON value (new tree or NULL with error set). */
static gr_json *describe(const char *path)
{
    if (gr_fs_is_dir(path)) {
        char *pj = gr_fs_join(path, "params.json");
        if (!pj) {
            gr_seterr(GR_ENOMEM, "out of memory");
            return NULL;
        }
        if (gr_fs_exists(pj)) {
            gr_json *j = gr_json_parse_file(pj);
            free(pj);
            return j;
        }
        free(pj);
        DIR *d = opendir(path);
        if (!d) {
            gr_seterr(GR_EIO, "echo: %s: cannot list the input directory", path);
            return NULL;
        }
        char **names = NULL;
        size_t n = 0;
        struct dirent *e;
        int rc = 0;
        while (!rc && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char **nn = realloc(names, (n + 1) * sizeof *nn);
            if (!nn || !(nn[n] = strdup(e->d_name))) rc = GR_ENOMEM;
            if (nn) names = nn;
            if (!rc) n++;
        }
        closedir(d);
        gr_json *arr = rc ? NULL : gr_jsonb_arr();
        if (arr && n) qsort(names, n, sizeof *names, cmp_name);
        for (size_t i = 0; arr && i < n; i++)
            if (gr_jsonb_push(arr, gr_jsonb_str(names[i]))) {
                gr_json_free(arr);
                arr = NULL;
            }
        for (size_t i = 0; i < n; i++) free(names[i]);
        free(names);
        gr_json *o = arr ? gr_jsonb_obj() : NULL;
        if (!o || gr_jsonb_set(o, "files", arr)) {
            gr_json_free(o);
            gr_seterr(GR_ENOMEM, "out of memory");
            return NULL;
        }
        return o;
    }
    uint8_t d[GR_SHA256_LEN];
    uint64_t size;
    if (gr_sha256_file(path, d, &size)) return NULL;
    char id[GR_ID_SZ];
    gr_sha256_id(d, id);
    gr_json *o = gr_jsonb_obj();
    if (!o || gr_jsonb_set(o, "sha256", gr_jsonb_str(id)) ||
        gr_jsonb_set(o, "size", gr_jsonb_int((int64_t)size))) {
        gr_json_free(o);
        return NULL;
    }
    return o;
}

static int echo_run(gr_op_ctx *ctx)
{
    gr_json *out = gr_jsonb_obj();
    gr_buf b = {0};
    char *dest = NULL;
    int rc = GR_ENOMEM;
    if (!out) goto done;
    const gr_json *p = ctx->params;
    for (size_t i = 0; i < p->len; i++) {
        const char *k = p->keys[i];
        if (k[0] == '_') continue;
        gr_json *v;
        if (!strcmp(k, "input") && p->items[i]->type == GR_JSON_STR) {
            if (!(v = describe(p->items[i]->str))) {
                rc = gr_errcode() ? gr_errcode() : GR_ENOMEM;
                goto done;
            }
        } else if (!strcmp(k, "inputs") && p->items[i]->type == GR_JSON_ARR) {
            v = gr_jsonb_arr();
            for (size_t q = 0; v && q < p->items[i]->len; q++) {
                const gr_json *s = p->items[i]->items[q];
                gr_json *dsc = s->type == GR_JSON_STR ? describe(s->str) : gr_jsonb_copy(s);
                if (!dsc) {
                    rc = gr_errcode() ? gr_errcode() : GR_ENOMEM;
                    gr_json_free(v);
                    goto done;
                }
                if (gr_jsonb_push(v, dsc)) {
                    gr_json_free(v);
                    v = NULL;
                }
            }
        } else
            v = gr_jsonb_copy(p->items[i]);
        if (!v || gr_jsonb_set(out, k, v)) goto done;
    }
    if ((rc = gr_jsonb_write(&b, out))) goto done;
    rc = GR_ENOMEM;
    if (gr_buf_putc(&b, '\n') || !(dest = gr_fs_join(ctx->outdir, "params.json"))) goto done;
    /* outdir is private to this run and the runtime stores it durably (or
     * discards it): a plain write is enough, no fsync here */
    FILE *f = fopen(dest, "wb");
    int bad = !f;
    if (f) {
        bad |= fwrite(b.data, 1, b.len, f) != b.len;
        bad |= fclose(f) != 0;
    }
    if (bad) {
        rc = gr_seterr(GR_EIO, "echo: %s: cannot write: %s", dest, strerror(errno));
        goto done;
    }
    char m[64];
    snprintf(m, sizeof m, "{\"bytes\":%zu}", b.len);
    rc = gr_op_set_metrics(ctx, m);
done:
    if (rc == GR_ENOMEM && gr_errcode() != GR_ENOMEM) gr_seterr(GR_ENOMEM, "echo: out of memory");
    free(dest);
    gr_buf_free(&b);
    gr_json_free(out);
    return rc;
}

const gr_op gr_op_echo = {
    .name = "echo",
    .version = 1,
    .summary = "test op: writes its parameters as params.json",
    .params = echo_params,
    .open_params = 1,
    .run = echo_run,
};
