/* gr_op: parameter access, progress and the op registry lookup. */
#include "gr_op.h"
#include "gr_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void gr_op_progress(gr_op_ctx *ctx, double done, double total, const char *fmt, ...)
{
    if (!ctx || !ctx->progress_cb) return;
    char msg[256] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    ctx->progress_cb(ctx->progress_ud, done, total, msg);
}

int gr_op_cancelled(const gr_op_ctx *ctx)
{
    return ctx && ctx->cancel && *ctx->cancel;
}

int gr_op_set_metrics(gr_op_ctx *ctx, const char *json_object)
{
    gr_buf_reset(&ctx->metrics);
    return gr_buf_puts(&ctx->metrics, json_object);
}

static const char *opname(const gr_op_ctx *ctx)
{
    return ctx && ctx->op ? ctx->op->name : "op";
}

static int wrong_type(const gr_op_ctx *ctx, const char *name, const char *want,
                      const gr_json *v)
{
    return gr_seterr(GR_EINVAL, "%s: parameter '%s' must be %s, not %s", opname(ctx), name, want,
                     gr_json_type_name(v->type));
}

int gr_op_num(const gr_op_ctx *ctx, const char *name, double def, double *out)
{
    const gr_json *v = gr_json_get(ctx->params, name);
    if (!v || v->type == GR_JSON_NULL) return *out = def, 0;
    if (v->type != GR_JSON_NUM) return wrong_type(ctx, name, "a number", v);
    *out = v->num;
    return 0;
}

int gr_op_int(const gr_op_ctx *ctx, const char *name, int64_t def, int64_t *out)
{
    const gr_json *v = gr_json_get(ctx->params, name);
    if (!v || v->type == GR_JSON_NULL) return *out = def, 0;
    if (v->type != GR_JSON_NUM || !v->is_int) return wrong_type(ctx, name, "an integer", v);
    *out = v->i;
    return 0;
}

int gr_op_bool(const gr_op_ctx *ctx, const char *name, int def, int *out)
{
    const gr_json *v = gr_json_get(ctx->params, name);
    if (!v || v->type == GR_JSON_NULL) return *out = def, 0;
    if (v->type != GR_JSON_BOOL) return wrong_type(ctx, name, "true or false", v);
    *out = v->boolean;
    return 0;
}

int gr_op_str(const gr_op_ctx *ctx, const char *name, const char *def, const char **out)
{
    const gr_json *v = gr_json_get(ctx->params, name);
    if (!v || v->type == GR_JSON_NULL) return *out = def, 0;
    if (v->type != GR_JSON_STR) return wrong_type(ctx, name, "a string", v);
    *out = v->str;
    return 0;
}

int gr_op_req_str(const gr_op_ctx *ctx, const char *name, const char **out)
{
    const gr_json *v = gr_json_get(ctx->params, name);
    if (!v) return gr_seterr(GR_EINVAL, "%s: missing required parameter '%s'", opname(ctx), name);
    return gr_op_str(ctx, name, NULL, out);
}

const gr_op *gr_op_find(const char *name)
{
    for (size_t i = 0; gr_ops[i]; i++)
        if (!strcmp(gr_ops[i]->name, name)) return gr_ops[i];
    return NULL;
}

static int type_ok(gr_ptype t, const gr_json *v)
{
    switch (t) {
    case GR_P_ANY: return 1;
    case GR_P_NUM: return v->type == GR_JSON_NUM;
    case GR_P_INT: return v->type == GR_JSON_NUM && v->is_int;
    case GR_P_BOOL: return v->type == GR_JSON_BOOL;
    case GR_P_STR:
    case GR_P_INPUT: return v->type == GR_JSON_STR;
    case GR_P_NUMS:
        if (v->type == GR_JSON_NUM) return 1;
        if (v->type != GR_JSON_ARR) return 0;
        for (size_t i = 0; i < v->len; i++)
            if (v->items[i]->type != GR_JSON_NUM) return 0;
        return 1;
    case GR_P_INPUTS:
        if (v->type != GR_JSON_ARR) return 0;
        for (size_t i = 0; i < v->len; i++)
            if (v->items[i]->type != GR_JSON_STR) return 0;
        return 1;
    }
    return 0;
}

static const char *type_desc(gr_ptype t)
{
    static const char *d[] = {"any value", "a number", "an integer", "true or false", "a string",
                              "a number or a list of numbers", "a stage id or artifact reference",
                              "a list of stage ids or artifact references"};
    return d[t];
}

int gr_op_check_params(const gr_op *op, const gr_json *params)
{
    if (!params || params->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "%s: parameters must be an object", op->name);
    for (size_t i = 0; i < params->len; i++) {
        const gr_param *p = op->params;
        while (p && p->name && strcmp(p->name, params->keys[i])) p++;
        if (!p || !p->name) {
            if (op->open_params) continue;
            return gr_seterr(GR_EINVAL, "%s: unknown parameter '%s'", op->name, params->keys[i]);
        }
        if (!type_ok(p->type, params->items[i]))
            return gr_seterr(GR_EINVAL, "%s: parameter '%s' must be %s", op->name, p->name,
                             type_desc(p->type));
    }
    for (const gr_param *p = op->params; p && p->name; p++)
        if (p->required && !gr_json_get(params, p->name))
            return gr_seterr(GR_EINVAL, "%s: missing required parameter '%s'", op->name, p->name);
    return 0;
}
