/* gr_resolve: stage input substitution, fan-in descriptions and memo keys. */
#include "gr_resolve.h"
#include "gr_err.h"
#include "gr_jsonb.h"
#include "gr_pipeline.h"
#include "gr_sha256.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const gr_resolve_dep *deps;
    size_t ndeps;
    gr_json **outs; /* parsed outputs per dep (lazily) */
    char **ids;     /* input ids collected */
    size_t nids, cap;
} rctx;

static int add_id(rctx *R, const char *id)
{
    for (size_t i = 0; i < R->nids; i++)
        if (!strcmp(R->ids[i], id)) return 0;
    if (R->nids == R->cap) {
        size_t nc = R->cap ? R->cap * 2 : 8;
        char **v = realloc(R->ids, nc * sizeof *v);
        if (!v) return gr_seterr(GR_ENOMEM, "out of memory");
        R->ids = v;
        R->cap = nc;
    }
    if (!(R->ids[R->nids] = strdup(id))) return gr_seterr(GR_ENOMEM, "out of memory");
    R->nids++;
    return 0;
}

static int find_dep(rctx *R, const char *sid)
{
    for (size_t i = 0; i < R->ndeps; i++)
        if (!strcmp(R->deps[i].sid, sid)) return (int)i;
    return -1;
}

/* The artifact id a dependency hands to its dependants (its `out`). */
static int dep_out(rctx *R, int d, const char **id)
{
    if (!R->outs[d]) {
        const char *o = R->deps[d].outputs ? R->deps[d].outputs : "{}";
        R->outs[d] = gr_json_parse(o, strlen(o), "outputs");
        if (!R->outs[d]) return gr_errcode();
    }
    const char *s = gr_json_get_str(R->outs[d], "out", NULL);
    if (!s || !gr_is_artifact_id(s))
        return gr_seterr(GR_EINVAL, "input stage '%s' has no output 'out' holding an artifact id",
                         R->deps[d].sid);
    *id = s;
    return 0;
}

static int map_fn(void *ud, const char *param, const char *ref, char **repl)
{
    rctx *R = ud;
    *repl = NULL;
    if (gr_is_artifact_id(ref)) return add_id(R, ref);
    int d = find_dep(R, ref);
    if (d < 0)
        return gr_seterr(GR_EINVAL,
                         "parameter '%s': '%s' is neither a dependency stage nor an artifact id",
                         param, ref);
    const char *id;
    int rc = dep_out(R, d, &id);
    if (rc) return rc;
    if (!(*repl = strdup(id))) return gr_seterr(GR_ENOMEM, "out of memory");
    return add_id(R, id);
}

/* Copy of o without members whose key starts with '_' (NULL on OOM). */
static gr_json *strip_reserved(const gr_json *o)
{
    gr_json *c = gr_jsonb_copy(o);
    if (!c || c->type != GR_JSON_OBJ) return c;
    for (size_t i = 0; i < c->len;) {
        if (c->keys[i][0] != '_') {
            i++;
            continue;
        }
        char *k = strdup(c->keys[i]); /* del frees the stored key */
        if (!k) {
            gr_json_free(c);
            return NULL;
        }
        gr_jsonb_del(c, k);
        free(k);
    }
    return c;
}

static gr_json *parse_or(const char *text, const char *def)
{
    if (!text || !*text) text = def;
    gr_json *j = gr_json_parse(text, strlen(text), "stored JSON");
    if (!j) return NULL;
    if (j->type == GR_JSON_NULL) {
        gr_json_free(j);
        return gr_json_parse(def, strlen(def), "default");
    }
    return j;
}

/* `_inputs`: one description per entry of the op's first list-of-inputs
 * parameter, in order (see schemas/protocol.md, TASK). */
static int add_fanin(rctx *R, const gr_op *op, const gr_json *orig, gr_json *rp)
{
    const gr_json *list = NULL;
    for (const gr_param *p = op->params; p && p->name; p++)
        if (p->type == GR_P_INPUTS && (list = gr_json_get(orig, p->name)) &&
            list->type == GR_JSON_ARR)
            break;
        else
            list = NULL;
    if (!list) return 0;
    gr_json *arr = gr_jsonb_arr();
    if (!arr) return GR_ENOMEM;
    for (size_t i = 0; i < list->len; i++) {
        const gr_json *e = list->items[i];
        if (e->type != GR_JSON_STR) continue;
        gr_json *m = gr_jsonb_obj();
        int rc = m ? 0 : GR_ENOMEM;
        if (gr_is_artifact_id(e->str)) {
            if (!rc) rc = gr_jsonb_set(m, "stage", gr_jsonb_null());
            if (!rc) rc = gr_jsonb_set(m, "op", gr_jsonb_null());
            if (!rc) rc = gr_jsonb_set(m, "params", gr_jsonb_obj());
            if (!rc) rc = gr_jsonb_set(m, "metrics", gr_jsonb_obj());
            if (!rc) rc = gr_jsonb_set(m, "out", gr_jsonb_str(e->str));
        } else {
            int d = find_dep(R, e->str);
            const char *id = NULL;
            if (!rc && d < 0) rc = gr_seterr(GR_EINVAL, "'%s' is not a dependency", e->str);
            if (!rc) rc = dep_out(R, d, &id);
            gr_json *dp = NULL, *dm = NULL, *ds = NULL;
            if (!rc && !(dp = parse_or(R->deps[d].rparams, "{}"))) rc = gr_errcode();
            if (!rc && !(dm = parse_or(R->deps[d].metrics, "{}"))) rc = gr_errcode();
            if (!rc && !(ds = strip_reserved(dp))) rc = GR_ENOMEM;
            gr_json_free(dp);
            if (!rc) rc = gr_jsonb_set(m, "stage", gr_jsonb_str(R->deps[d].sid));
            if (!rc) rc = gr_jsonb_set(m, "op", gr_jsonb_str(R->deps[d].op));
            if (!rc)
                rc = gr_jsonb_set(m, "params", ds);
            else
                gr_json_free(ds);
            if (!rc)
                rc = gr_jsonb_set(m, "metrics", dm);
            else
                gr_json_free(dm);
            if (!rc) rc = gr_jsonb_set(m, "out", gr_jsonb_str(id));
        }
        if (rc) {
            gr_json_free(m);
            gr_json_free(arr);
            return rc;
        }
        if ((rc = gr_jsonb_push(arr, m))) {
            gr_json_free(arr);
            return rc;
        }
    }
    return gr_jsonb_set(rp, "_inputs", arr);
}

int gr_memo_key(const gr_op *op, const gr_json *params, const char *const *inputs, size_t ninputs,
                char hex[65])
{
    gr_json *p = strip_reserved(params);
    if (!p) return gr_seterr(GR_ENOMEM, "out of memory");
    gr_buf b = {0};
    gr_buf_printf(&b, "graft-memo/1\n%s\n%d\n", op->name, op->version);
    int rc = gr_jsonb_write(&b, p);
    gr_json_free(p);
    for (size_t i = 0; !rc && i < ninputs; i++) gr_buf_printf(&b, "\n%s", inputs[i]);
    if (!rc && b.oom) rc = gr_seterr(GR_ENOMEM, "out of memory");
    uint8_t d[GR_SHA256_LEN];
    if (!rc) rc = gr_sha256_buf(b.data, b.len, d);
    if (!rc) gr_sha256_hex(d, hex);
    gr_buf_free(&b);
    return rc;
}

int gr_resolve_stage(const char *op_name, const char *params, const gr_resolve_dep *deps,
                     size_t ndeps, gr_resolved *out)
{
    memset(out, 0, sizeof *out);
    rctx R = {.deps = deps, .ndeps = ndeps};
    gr_json *orig = NULL, *rp = NULL;
    gr_buf ib = {0};
    int rc = 0;
    const gr_op *op = gr_op_find(op_name);
    if (!op)
        return gr_seterr(GR_EINVAL, "unknown op '%s' (not in this broker's op table)", op_name);
    if (ndeps && !(R.outs = calloc(ndeps, sizeof *R.outs)))
        return gr_seterr(GR_ENOMEM, "out of memory");
    if (!(orig = gr_json_parse(params, strlen(params), "stage params"))) {
        rc = gr_errcode();
        goto fail;
    }
    if (!(rp = gr_params_map_inputs(op, orig, map_fn, &R))) {
        rc = gr_errcode() ? gr_errcode() : GR_EINVAL;
        goto fail;
    }
    if ((rc = gr_memo_key(op, rp, (const char *const *)R.ids, R.nids, out->memo))) goto fail;
    if ((rc = add_fanin(&R, op, orig, rp))) goto fail;
    if (!(out->rparams = gr_jsonb_canon(rp))) {
        rc = gr_errcode() ? gr_errcode() : GR_ENOMEM;
        goto fail;
    }
    gr_buf_putc(&ib, '[');
    for (size_t i = 0; i < R.nids; i++) {
        if (i) gr_buf_putc(&ib, ',');
        gr_buf_json_str(&ib, R.ids[i], strlen(R.ids[i]));
    }
    gr_buf_putc(&ib, ']');
    if (ib.oom) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    out->inputs = gr_buf_take(&ib);
fail:
    if (rc) gr_resolved_clear(out);
    gr_buf_free(&ib);
    gr_json_free(orig);
    gr_json_free(rp);
    for (size_t i = 0; i < ndeps && R.outs; i++) gr_json_free(R.outs[i]);
    free(R.outs);
    for (size_t i = 0; i < R.nids; i++) free(R.ids[i]);
    free(R.ids);
    return rc;
}

void gr_resolved_clear(gr_resolved *r)
{
    free(r->rparams);
    free(r->inputs);
    memset(r, 0, sizeof *r);
}
