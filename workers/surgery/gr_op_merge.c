/* merge op: merges fine-tuned models, deltas (dense or sparse) or LoRA
 * adapters onto a base, tensor by tensor, with the kernels of gr_merge, and
 * writes a checkpoint transformers can load. */
#include "gr_err.h"
#include "gr_merge.h"
#include "gr_mparam.h"
#include "gr_op.h"
#include "gr_prune.h"
#include "gr_sparse.h"
#include "gr_surg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const gr_param merge_params[] = {
    {"method", GR_P_STR, 1,
     "linear | task_arithmetic | ties | dare_ties | dare_linear | breadcrumbs | breadcrumbs_ties "
     "| della | della_linear | slerp | pcb | model_stock"},
    {"base", GR_P_INPUT, 0, "base checkpoint (required by every method but linear)"},
    {"models", GR_P_INPUTS, 1, "fine-tuned checkpoints, deltas (dense or sparse) or LoRA adapters"},
    {"weights", GR_P_NUMS, 0, "one weight per model (shorthand for per_model[i].weight)"},
    {"per_model", GR_P_ANY, 0,
     "list parallel to models of {weight, density, gamma, epsilon}, each a number, layer gradient "
     "or filter list"},
    {"weight", GR_P_ANY, 0, "weight of every model (number, gradient or filter list)"},
    {"density", GR_P_ANY, 0, "fraction of each delta kept, in (0, 1] (default 1)"},
    {"gamma", GR_P_ANY, 0, "breadcrumbs: top fraction dropped (default 0.01)"},
    {"epsilon", GR_P_ANY, 0, "della: keep-probability spread (default 0.15)"},
    {"t", GR_P_ANY, 0, "slerp: interpolation factor, 0 = base (number, gradient or filter list)"},
    {"lambda", GR_P_NUM, 0, "scale of the merged delta (default 1)"},
    {"normalize", GR_P_BOOL, 0, "divide by the sum of the (kept) weights"},
    {"consensus", GR_P_STR, 0, "ties family: sum (default) | count"},
    {"rescale", GR_P_STR, 0, "sparsifier rescale: inverse | l1 | none"},
    {"seed", GR_P_INT, 0, "random seed of dare/della masks (default 0)"},
    {"pcb_ratio", GR_P_NUM, 0, "pcb: fraction of balance scores kept (default 0.1)"},
    {"scope", GR_P_STR, 0,
     "tensor (default) | global: magnitude thresholds and pcb over the model"},
    {"dtype", GR_P_STR, 0, "output dtype (default: the base's)"},
    {"shard_size", GR_P_INT, 0, "bytes per safetensors shard (default 5 GB)"},
    {"strict", GR_P_BOOL, 0, "fail on missing tensors and shape mismatches instead of warning"},
    {"chunk", GR_P_INT, 0,
     "elements per piece when a larger tensor streams (linear, task_arithmetic, ties, "
     "breadcrumbs, breadcrumbs_ties; default 4194304; 0: whole tensors)"},
    {"tokenizer_source", GR_P_INPUT, 0,
     "checkpoint whose tokenizer files are copied (default base)"},
    {NULL, 0, 0, NULL},
};

/* What model i contributes to a tensor. */
enum { USE_SKIP = 0, USE_READ, USE_ZERO };

typedef struct mmodel {
    gr_src *src;
    gr_mparam *weight, *density, *gamma, *epsilon; /* per-model values (NULL: unset) */
    gr_prune_global *g;                            /* scope global */
    int g_more;
} mmodel;

typedef struct mtensor {
    const gr_src_tensor *bt; /* the base's tensor (or the first model's without base) */
    const gr_src_tensor **mt;
    uint8_t *use;
} mtensor;

typedef struct merge_job {
    gr_op_ctx *ctx;
    gr_merge_opts o;
    gr_src *base, *ref; /* ref: base, or the first model when there is none */
    mmodel *m;
    size_t k;
    gr_mparam *weight, *density, *gamma, *epsilon, *t;
    int strict, have_dtype, global, in_kind, threads;
    gr_dtype dtype;
    long nlayers;
    uint64_t chunk; /* elements per streamed piece; 0: never stream */
    mtensor *tp;
    size_t nt;
    gr_warns warns;
} merge_job;

static const char *const MPARAM_KEYS[] = {"weight", "density", "gamma", "epsilon"};

static gr_mparam **mslot(mmodel *m, size_t i)
{
    gr_mparam **s[] = {&m->weight, &m->density, &m->gamma, &m->epsilon};
    return s[i];
}

static gr_mparam **gslot(merge_job *j, size_t i)
{
    gr_mparam **s[] = {&j->weight, &j->density, &j->gamma, &j->epsilon};
    return s[i];
}

/* Per model, then global, then def; *set says whether any level had it. */
static int resolve(const gr_mparam *pm, const gr_mparam *pg, const char *tensor, long nl,
                   double def, double *out, int *set)
{
    const gr_mparam *lv[2] = {pm, pg};
    for (int i = 0; i < 2; i++) {
        if (!lv[i]) continue;
        int rc = gr_mparam_eval_tensor(lv[i], tensor, nl, out);
        if (rc == GR_ENOTFOUND) continue;
        if (set) *set = 1;
        return rc;
    }
    if (set) *set = 0;
    *out = def;
    return 0;
}

static int uses_weight(gr_merge_method m)
{
    return m != GR_MERGE_SLERP && m != GR_MERGE_PCB && m != GR_MERGE_MODEL_STOCK;
}

/* Model i's parameters for a tensor. */
static int model_params(merge_job *j, size_t i, const char *tensor, gr_merge_model *mm)
{
    mmodel *m = &j->m[i];
    gr_merge_model_init(mm, i);
    int set = 0, rc;
    if ((rc = resolve(m->weight, j->weight, tensor, j->nlayers, 1.0, &mm->weight, &set))) return rc;
    if (!set && uses_weight(j->o.method))
        return gr_seterr(GR_EINVAL,
                         "merge: model %zu (%s): no weight for tensor '%s' (weight is required "
                         "for every model)",
                         i, gr_src_path(m->src), tensor);
    if ((rc = resolve(m->density, j->density, tensor, j->nlayers, mm->density, &mm->density,
                      NULL)) ||
        (rc = resolve(m->gamma, j->gamma, tensor, j->nlayers, mm->gamma, &mm->gamma, NULL)) ||
        (rc = resolve(m->epsilon, j->epsilon, tensor, j->nlayers, mm->epsilon, &mm->epsilon, NULL)))
        return rc;
    if (j->o.sparsify != GR_PRUNE_NONE && mm->density < 1) {
        gr_prune_params pp;
        gr_prune_params_init(&pp, j->o.sparsify);
        pp.density = mm->density;
        pp.gamma = mm->gamma;
        pp.epsilon = mm->epsilon;
        pp.rescale = j->o.rescale;
        char what[600];
        snprintf(what, sizeof what, "merge: model %zu, tensor '%s'", i, tensor);
        return gr_prune_check(&pp, what);
    }
    if (!(mm->density > 0 && mm->density <= 1))
        return gr_seterr(GR_EINVAL, "merge: model %zu, tensor '%s': density %g outside (0, 1]", i,
                         tensor, mm->density);
    return 0;
}

/* Decides, for every output tensor and model, what the model contributes,
 * with the warnings (or, strict, errors) of merge-methods.md. */
static int plan(merge_job *j)
{
    gr_src *ref = j->ref;
    j->nt = gr_src_count(ref);
    j->tp = calloc(j->nt + 1, sizeof *j->tp);
    if (!j->tp) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < j->nt; i++) {
        j->tp[i].bt = gr_src_stored(ref, i);
        j->tp[i].mt = calloc(j->k, sizeof *j->tp[i].mt);
        j->tp[i].use = calloc(j->k, 1);
        if (!j->tp[i].mt || !j->tp[i].use) return gr_seterr(GR_ENOMEM, "out of memory");
    }
    char s1[160], s2[160];
    for (size_t mi = 0; mi < j->k; mi++) {
        gr_src *src = j->m[mi].src;
        int is_model = gr_src_kind_of(src) == GR_SRC_MODEL;
        for (size_t x = 0; x < gr_src_count(src); x++) {
            const gr_src_tensor *t = gr_src_at(src, x);
            if (!gr_src_find(ref, t->name))
                return gr_seterr(GR_EINVAL,
                                 "merge: tensor '%s' of %s is missing in %s (different "
                                 "architectures?)",
                                 t->name, gr_src_role(src), gr_src_role(ref));
        }
        for (size_t i = 0; i < j->nt; i++) {
            mtensor *tp = &j->tp[i];
            const gr_src_tensor *b = tp->bt, *t = gr_src_find(src, b->name);
            if (!gr_dtype_is_float(b->dtype)) continue; /* carried through from the base */
            if (!t) {
                if (!is_model) {
                    tp->use[mi] = USE_ZERO;
                    continue;
                }
                if (j->strict)
                    return gr_seterr(GR_EINVAL, "merge: tensor '%s' is missing in %s", b->name,
                                     gr_src_role(src));
                gr_warns_add(&j->warns, "merge",
                             "tensor '%s' is missing in %s; that model contributes nothing to it",
                             b->name, gr_src_role(src));
                continue;
            }
            if (!gr_dtype_is_float(t->dtype)) {
                if (j->strict)
                    return gr_seterr(GR_EINVAL, "merge: tensor '%s' of %s has dtype %s", b->name,
                                     gr_src_role(src), gr_dtype_name(t->dtype));
                gr_warns_add(&j->warns, "merge", "tensor '%s' of %s has dtype %s; skipped", b->name,
                             gr_src_role(src), gr_dtype_name(t->dtype));
                continue;
            }
            int same = t->ndim == b->ndim &&
                       !memcmp(t->shape, b->shape, sizeof(int64_t) * (size_t)b->ndim);
            if (!same) {
                gr_shape_str(s1, sizeof s1, t->ndim, t->shape);
                gr_shape_str(s2, sizeof s2, b->ndim, b->shape);
                int crop = t->ndim == b->ndim && gr_surg_is_vocab_tensor(b->name) &&
                           gr_surg_croppable(b->shape, t->shape, b->ndim) &&
                           gr_src_kind_of(src) != GR_SRC_LORA;
                if (j->strict)
                    return gr_seterr(GR_EINVAL, "merge: tensor '%s': shape %s in %s but %s in %s",
                                     b->name, s1, gr_src_role(src), s2, gr_src_role(ref));
                if (!crop) {
                    gr_warns_add(&j->warns, "merge",
                                 "tensor '%s': shape %s in %s but %s in %s; that model is skipped "
                                 "for it",
                                 b->name, s1, gr_src_role(src), s2, gr_src_role(ref));
                    continue;
                }
                gr_warns_add(&j->warns, "merge",
                             "tensor '%s': %s has %lld rows, %s %lld; cropped to %lld", b->name,
                             gr_src_role(src), (long long)t->shape[0], gr_src_role(ref),
                             (long long)b->shape[0], (long long)b->shape[0]);
            }
            tp->mt[mi] = t;
            tp->use[mi] = USE_READ;
        }
    }
    return 0;
}

/* Fills buf with model mi's input for tensor tp (delta or θ per j->in_kind);
 * base holds the base tensor (NULL without base). */
static int read_input(merge_job *j, const mtensor *tp, size_t mi, const float *base, float *buf)
{
    uint64_t n = tp->bt->nelem;
    gr_src *src = j->m[mi].src;
    if (tp->use[mi] == USE_ZERO) {
        if (j->in_kind == GR_MERGE_IN_DELTAS || !base)
            memset(buf, 0, n * sizeof *buf);
        else
            memcpy(buf, base, n * sizeof *buf);
        return 0;
    }
    const gr_src_tensor *t = tp->mt[mi];
    int rc;
    if (j->in_kind == GR_MERGE_IN_DELTAS)
        rc = gr_src_read_delta(src, t, base, n, buf);
    else if (!t->theta && !base)
        rc = gr_seterr(GR_EINVAL, "merge: %s is a delta; the method needs a base to add it to",
                       gr_src_role(src));
    else
        rc = gr_src_read_theta(src, t, base, n, buf);
    gr_src_release(src, t);
    return rc;
}

/* Names the op in a kernel's message unless it already does. */
static int prefixed(int rc)
{
    if (strncmp(gr_errmsg(), "merge", 5)) gr_adderr(rc, "merge");
    return rc;
}

static int setup(merge_job *j)
{
    gr_op_ctx *ctx = j->ctx;
    const gr_json *p = ctx->params;
    const char *method, *cons, *resc, *scope, *dtname;
    int rc;
    if ((rc = gr_op_req_str(ctx, "method", &method))) return rc;
    if ((rc = gr_merge_opts_init(&j->o, method))) return prefixed(rc);
    double lambda;
    int normalize;
    int64_t seed, dummy;
    if ((rc = gr_op_num(ctx, "lambda", j->o.lambda, &lambda)) ||
        (rc = gr_op_bool(ctx, "normalize", j->o.normalize, &normalize)) ||
        (rc = gr_op_int(ctx, "seed", 0, &seed)) ||
        (rc = gr_op_num(ctx, "pcb_ratio", j->o.pcb_ratio, &j->o.pcb_ratio)) ||
        (rc = gr_op_str(ctx, "consensus", NULL, &cons)) ||
        (rc = gr_op_str(ctx, "rescale", NULL, &resc)) ||
        (rc = gr_op_str(ctx, "scope", "tensor", &scope)) ||
        (rc = gr_op_str(ctx, "dtype", NULL, &dtname)) ||
        (rc = gr_op_bool(ctx, "strict", 0, &j->strict)) ||
        (rc = gr_op_int(ctx, "shard_size", 0, &dummy)))
        return rc;
    j->o.lambda = lambda;
    j->o.normalize = normalize;
    j->o.seed = (uint64_t)seed;
    if (cons) {
        if (j->o.consensus == GR_CONSENSUS_NONE)
            return gr_seterr(GR_EINVAL, "merge: parameter 'consensus': method %s elects no signs",
                             method);
        if ((rc = gr_consensus_parse(cons, &j->o.consensus))) return prefixed(rc);
    }
    if (resc && (rc = gr_rescale_parse(resc, &j->o.rescale))) return prefixed(rc);
    if (strcmp(scope, "tensor") && strcmp(scope, "global"))
        return gr_seterr(GR_EINVAL,
                         "merge: parameter 'scope' must be 'tensor' or 'global', not '%s'", scope);
    if (dtname) {
        if ((rc = gr_surg_dtype_parse(dtname, "merge: parameter 'dtype'", &j->dtype))) return rc;
        j->have_dtype = 1;
    }
    j->threads = gr_surg_threads(ctx);
    j->o.threads = j->threads;
    j->in_kind = j->o.method == GR_MERGE_LINEAR || j->o.method == GR_MERGE_SLERP ||
                         j->o.method == GR_MERGE_MODEL_STOCK
                     ? GR_MERGE_IN_MODELS
                     : GR_MERGE_IN_DELTAS;
    j->global = !strcmp(scope, "global");
    if (j->global && j->o.method != GR_MERGE_PCB && j->o.sparsify != GR_PRUNE_MAGNITUDE &&
        j->o.sparsify != GR_PRUNE_BREADCRUMBS) {
        if (j->o.sparsify == GR_PRUNE_NONE || j->o.sparsify == GR_PRUNE_DARE)
            j->global = 0; /* nothing model-wide to decide: the same as per tensor */
        else
            return gr_seterr(GR_EINVAL, "merge: scope global: method %s has no model-wide form",
                             method);
    }

    /* global parameters */
    for (size_t i = 0; i < 4; i++) {
        const gr_json *v = gr_json_get(p, MPARAM_KEYS[i]);
        if (!v || v->type == GR_JSON_NULL) continue;
        char what[64];
        snprintf(what, sizeof what, "merge: parameter '%s'", MPARAM_KEYS[i]);
        if (!(*gslot(j, i) = gr_mparam_from_json(v, what))) return gr_errcode();
    }
    const gr_json *tv = gr_json_get(p, "t");
    if (tv && tv->type != GR_JSON_NULL && !(j->t = gr_mparam_from_json(tv, "merge: parameter 't'")))
        return gr_errcode();
    if (j->o.method == GR_MERGE_SLERP && !j->t)
        return gr_seterr(GR_EINVAL, "merge: slerp needs parameter 't'");

    /* inputs */
    const gr_json *models = gr_json_get(p, "models");
    if (!models || models->type != GR_JSON_ARR || !models->len)
        return gr_seterr(GR_EINVAL, "merge: parameter 'models' must be a non-empty list");
    j->k = models->len;
    if (!(j->m = calloc(j->k, sizeof *j->m))) return gr_seterr(GR_ENOMEM, "out of memory");
    const char *bpath = gr_json_get_str(p, "base", NULL);
    if (bpath) {
        if (!(j->base = gr_src_open(bpath, "base"))) return gr_errcode();
        if (gr_src_kind_of(j->base) != GR_SRC_MODEL)
            return gr_seterr(GR_EINVAL, "merge: base (%s) is a %s, not a model checkpoint", bpath,
                             gr_src_kind_name(gr_src_kind_of(j->base)));
        gr_src_set_threads(j->base, j->threads);
    } else if (gr_merge_needs_base(j->o.method)) {
        return gr_seterr(GR_EINVAL, "merge: method %s needs parameter 'base'", method);
    }
    for (size_t i = 0; i < j->k; i++) {
        const gr_json *v = models->items[i];
        if (v->type != GR_JSON_STR)
            return gr_seterr(GR_EINVAL, "merge: models[%zu] must be a path", i);
        char role[64];
        snprintf(role, sizeof role, "model %zu", i);
        if (!(j->m[i].src = gr_src_open(v->str, role))) return gr_errcode();
        gr_src_set_threads(j->m[i].src, j->threads);
        if (!j->base && gr_src_kind_of(j->m[i].src) != GR_SRC_MODEL)
            return gr_seterr(GR_EINVAL,
                             "merge: models[%zu] (%s) is a %s; without a base only "
                             "model checkpoints can be merged",
                             i, v->str, gr_src_kind_name(gr_src_kind_of(j->m[i].src)));
    }
    if (j->o.method == GR_MERGE_SLERP && j->k != 1)
        return gr_seterr(GR_EINVAL, "merge: slerp takes the base and exactly one model, not %zu",
                         j->k);
    if (j->o.method == GR_MERGE_MODEL_STOCK && j->k < 2)
        return gr_seterr(GR_EINVAL, "merge: model_stock needs at least two models");
    j->ref = j->base ? j->base : j->m[0].src;

    /* per-model parameters */
    const gr_json *ws = gr_json_get(p, "weights");
    if (ws && ws->type != GR_JSON_NULL) {
        if (j->weight)
            return gr_seterr(GR_EINVAL, "merge: give either 'weight' or 'weights', not both");
        if (ws->type == GR_JSON_NUM) {
            if (!(j->weight = gr_mparam_scalar(ws->num)))
                return gr_seterr(GR_ENOMEM, "out of memory");
        } else {
            if (ws->len != j->k)
                return gr_seterr(GR_EINVAL, "merge: 'weights' has %zu entries for %zu models",
                                 ws->len, j->k);
            for (size_t i = 0; i < j->k; i++)
                if (!(j->m[i].weight = gr_mparam_scalar(ws->items[i]->num)))
                    return gr_seterr(GR_ENOMEM, "out of memory");
        }
    }
    const gr_json *pm = gr_json_get(p, "per_model");
    if (pm && pm->type != GR_JSON_NULL) {
        if (pm->type != GR_JSON_ARR || pm->len != j->k)
            return gr_seterr(GR_EINVAL,
                             "merge: 'per_model' must be a list of %zu objects (one per "
                             "model)",
                             j->k);
        for (size_t i = 0; i < j->k; i++) {
            const gr_json *o = pm->items[i];
            if (o->type == GR_JSON_NULL) continue;
            if (o->type != GR_JSON_OBJ)
                return gr_seterr(GR_EINVAL, "merge: per_model[%zu] must be an object", i);
            for (size_t x = 0; x < o->len; x++) {
                size_t slot = 4;
                for (size_t q = 0; q < 4; q++)
                    if (!strcmp(o->keys[x], MPARAM_KEYS[q])) slot = q;
                if (slot == 4)
                    return gr_seterr(GR_EINVAL,
                                     "merge: per_model[%zu]: unknown parameter '%s' (weight, "
                                     "density, gamma, epsilon)",
                                     i, o->keys[x]);
                if (*mslot(&j->m[i], slot))
                    return gr_seterr(GR_EINVAL,
                                     "merge: per_model[%zu].%s given twice (also in "
                                     "'weights')",
                                     i, o->keys[x]);
                char what[96];
                snprintf(what, sizeof what, "merge: per_model[%zu].%s", i, o->keys[x]);
                if (!(*mslot(&j->m[i], slot) = gr_mparam_from_json(o->items[x], what)))
                    return gr_errcode();
            }
        }
    }
    /* slerp's t is resolved and checked per tensor */
    if (j->o.method == GR_MERGE_SLERP) j->o.t = 0;
    if ((rc = gr_merge_opts_check(&j->o))) return prefixed(rc);
    return 0;
}

/* Model mi's sparsifier parameters for scope global (taken at a tensor
 * outside the layers; the caller checks that no tensor differs). */
static int global_params(merge_job *j, size_t mi, gr_merge_model *mm)
{
    mmodel *m = &j->m[mi];
    gr_merge_model_init(mm, mi);
    int rc;
    if ((rc = resolve(m->density, j->density, "", j->nlayers, mm->density, &mm->density, NULL)) ||
        (rc = resolve(m->gamma, j->gamma, "", j->nlayers, mm->gamma, &mm->gamma, NULL)) ||
        (rc = resolve(m->epsilon, j->epsilon, "", j->nlayers, mm->epsilon, &mm->epsilon, NULL)))
        return rc;
    return 0;
}

/* scope global: runs the threshold passes of every model's sparsifier. */
static int global_passes(merge_job *j, float *base, float **in)
{
    for (size_t mi = 0; mi < j->k; mi++) {
        gr_merge_model mm;
        int rc = global_params(j, mi, &mm);
        if (rc) return rc;
        gr_prune_params pp;
        gr_prune_params_init(&pp, j->o.sparsify);
        pp.density = mm.density;
        pp.gamma = mm.gamma;
        pp.epsilon = mm.epsilon;
        pp.rescale = j->o.rescale;
        if (!(j->m[mi].g = gr_prune_global_new(&pp, j->threads)))
            return gr_adderr(gr_errcode(), "merge: model %zu: scope global", mi);
        j->m[mi].g_more = 1;
    }
    int pass = 0;
    for (;;) {
        int any = 0;
        for (size_t mi = 0; mi < j->k; mi++) any |= j->m[mi].g_more;
        if (!any) return 0;
        for (size_t i = 0; i < j->nt; i++) {
            mtensor *tp = &j->tp[i];
            uint64_t n = tp->bt->nelem;
            if (!gr_dtype_is_float(tp->bt->dtype)) continue;
            int rc = gr_src_read(j->base, tp->bt, n, base);
            for (size_t mi = 0; !rc && mi < j->k; mi++) {
                if (!j->m[mi].g_more || tp->use[mi] == USE_SKIP) continue;
                rc = read_input(j, tp, mi, base, in[0]);
                if (!rc) rc = gr_prune_global_feed(j->m[mi].g, in[0], n);
            }
            gr_src_release(j->base, tp->bt);
            if (rc) return rc;
            if (gr_op_cancelled(j->ctx)) return gr_seterr(GR_ECANCEL, "merge: cancelled");
        }
        for (size_t mi = 0; mi < j->k; mi++) {
            if (!j->m[mi].g_more) continue;
            int rc = gr_prune_global_end_pass(j->m[mi].g);
            if (rc < 0) return gr_adderr(rc, "merge: model %zu", mi);
            j->m[mi].g_more = rc > 0;
        }
        gr_op_progress(j->ctx, 0, 1, "scope global: pass %d over the models", ++pass);
    }
}

/* pcb with scope global: the four passes of gr_pcb_global; a model missing
 * a tensor gives a zero delta there. */
static int pcb_passes(merge_job *j, gr_pcb_global *g, float *base, float **in)
{
    int rc, pass = 0;
    do {
        for (size_t i = 0; i < j->nt; i++) {
            mtensor *tp = &j->tp[i];
            uint64_t n = tp->bt->nelem;
            if (!gr_dtype_is_float(tp->bt->dtype)) continue;
            if ((rc = gr_src_read(j->base, tp->bt, n, base))) return rc;
            for (size_t mi = 0; mi < j->k; mi++) {
                if (tp->use[mi] == USE_SKIP)
                    memset(in[mi], 0, n * sizeof(float));
                else if ((rc = read_input(j, tp, mi, base, in[mi])))
                    return rc;
            }
            gr_src_release(j->base, tp->bt);
            if ((rc = gr_pcb_global_feed(g, (const float *const *)in, n))) return rc;
            if (gr_op_cancelled(j->ctx)) return gr_seterr(GR_ECANCEL, "merge: cancelled");
        }
        gr_op_progress(j->ctx, 0, 1, "pcb scope global: pass %d over the models", ++pass);
    } while ((rc = gr_pcb_global_end_pass(g)) > 0);
    return rc;
}

/* Whether tensor tp streams in pieces: the method merges element by element
 * after an exact magnitude or breadcrumbs cut, which the global selection of
 * gr_prune computes over the pieces of one tensor exactly as over the whole
 * (ties go to the lower index either way). Random masks (dare, della), slerp,
 * model_stock and pcb need the whole tensor. */
static int streams(const merge_job *j, const mtensor *tp)
{
    gr_merge_method m = j->o.method;
    if (!j->chunk || tp->bt->nelem <= j->chunk || j->global || m == GR_MERGE_SLERP ||
        m == GR_MERGE_MODEL_STOCK || m == GR_MERGE_PCB)
        return 0;
    if (j->o.sparsify != GR_PRUNE_NONE && j->o.sparsify != GR_PRUNE_MAGNITUDE &&
        j->o.sparsify != GR_PRUNE_BREADCRUMBS)
        return 0;
    for (size_t mi = 0; mi < j->k; mi++)
        if (tp->use[mi] == USE_READ && !gr_src_streamable(j->m[mi].src, tp->mt[mi])) return 0;
    return 1;
}

/* Model mi's input for elements [off, off+m) of tp into buf (base: the
 * base's elements there, or NULL). */
static int read_piece(merge_job *j, const mtensor *tp, size_t mi, const float *base, uint64_t off,
                      uint64_t m, float *buf)
{
    gr_src *src = j->m[mi].src;
    if (tp->use[mi] == USE_ZERO) {
        if (j->in_kind == GR_MERGE_IN_DELTAS || !base)
            memset(buf, 0, m * sizeof *buf);
        else
            memcpy(buf, base, m * sizeof *buf);
        return 0;
    }
    const gr_src_tensor *t = tp->mt[mi];
    if (j->in_kind == GR_MERGE_IN_DELTAS) return gr_src_read_delta_range(src, t, base, off, m, buf);
    if (!t->theta && !base)
        return gr_seterr(GR_EINVAL, "merge: %s is a delta; the method needs a base to add it to",
                         gr_src_role(src));
    return gr_src_read_theta_range(src, t, base, off, m, buf);
}

/* Merges a large tensor piece by piece: the sparsifier's cut is selected
 * over the pieces first (two or three passes of gr_prune_global per model),
 * then every piece is read, cut and merged with density 1, and written. */
static int merge_streamed(merge_job *j, const mtensor *tp, float *base, float **in, float **sub,
                          gr_merge_model *mm, gr_stw *w, double done, double total)
{
    const gr_src_tensor *b = tp->bt;
    uint64_t n = b->nelem, step = j->chunk;
    gr_prune_global **g = calloc(j->k, sizeof *g);
    int *more = calloc(j->k, sizeof *more), rc = 0, any = 0;
    if (!g || !more) {
        rc = gr_seterr(GR_ENOMEM, "merge: out of memory");
        goto out;
    }
    for (size_t mi = 0; mi < j->k; mi++) {
        gr_merge_model x;
        if (tp->use[mi] == USE_SKIP || (rc = model_params(j, mi, b->name, &x))) {
            if (rc) goto out;
            continue;
        }
        if (j->o.sparsify == GR_PRUNE_NONE || x.density >= 1) continue;
        gr_prune_params pp;
        gr_prune_params_init(&pp, j->o.sparsify);
        pp.density = x.density;
        pp.gamma = x.gamma;
        pp.epsilon = x.epsilon;
        pp.rescale = j->o.rescale;
        if (!(g[mi] = gr_prune_global_new(&pp, j->threads))) {
            rc = gr_adderr(gr_errcode(), "merge: model %zu, tensor '%s'", mi, b->name);
            goto out;
        }
        more[mi] = any = 1;
    }
    while (any) { /* selection passes */
        for (uint64_t off = 0; off < n; off += step) {
            uint64_t m = n - off < step ? n - off : step;
            if (j->base && (rc = gr_src_read_range(j->base, b, off, m, base))) goto out;
            for (size_t mi = 0; mi < j->k; mi++) {
                if (!more[mi]) continue;
                if ((rc = read_piece(j, tp, mi, j->base ? base : NULL, off, m, in[mi])) ||
                    (rc = gr_prune_global_feed(g[mi], in[mi], m)))
                    goto out;
            }
            if (gr_op_cancelled(j->ctx)) {
                rc = gr_seterr(GR_ECANCEL, "merge: cancelled");
                goto out;
            }
        }
        any = 0;
        for (size_t mi = 0; mi < j->k; mi++) {
            if (!more[mi]) continue;
            int r = gr_prune_global_end_pass(g[mi]);
            if (r < 0) {
                rc = gr_adderr(r, "merge: model %zu, tensor '%s'", mi, b->name);
                goto out;
            }
            more[mi] = r > 0;
            any |= more[mi];
        }
    }
    gr_merge_opts o = j->o;
    for (uint64_t off = 0; off < n; off += step) {
        uint64_t m = n - off < step ? n - off : step;
        const float *bp = NULL;
        if (j->base) {
            if ((rc = gr_src_read_range(j->base, b, off, m, base))) goto out;
            bp = base;
        }
        size_t k = 0;
        for (size_t mi = 0; mi < j->k; mi++) {
            if (tp->use[mi] == USE_SKIP) continue;
            if ((rc = read_piece(j, tp, mi, bp, off, m, in[mi])) ||
                (g[mi] && (rc = gr_prune_global_apply(g[mi], in[mi], m, NULL))) ||
                (rc = model_params(j, mi, b->name, &mm[k])))
                goto out;
            mm[k].density = 1; /* cut above */
            sub[k++] = in[mi];
        }
        if (k) {
            gr_merge_tinfo ti = {b->name, (size_t)m, (size_t)m};
            if ((rc = gr_merge_tensor(&o, &ti, bp, sub, j->in_kind, mm, k, base))) goto out;
        }
        if ((rc = gr_stw_write_f32(w, base, m))) goto out;
        gr_op_progress(j->ctx, done + (double)(off + m), total, "%s", b->name);
        if (gr_op_cancelled(j->ctx)) {
            rc = gr_seterr(GR_ECANCEL, "merge: cancelled");
            goto out;
        }
    }
    if (j->base) gr_src_release(j->base, b);
    for (size_t mi = 0; mi < j->k; mi++)
        if (tp->use[mi] == USE_READ) gr_src_release(j->m[mi].src, tp->mt[mi]);
out:
    for (size_t mi = 0; g && mi < j->k; mi++) gr_prune_global_destroy(&g[mi]);
    free(g);
    free(more);
    return rc;
}

static int merge_run(gr_op_ctx *ctx)
{
    merge_job j = {0};
    j.ctx = ctx;
    gr_stw *w = NULL;
    gr_pcb_global *pcb = NULL;
    float *base = NULL, **in = NULL, **sub = NULL;
    gr_merge_model *mm = NULL;
    gr_buf m = {0};
    const char **names = NULL;
    int64_t shard = 0;
    const char *tok = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = setup(&j);
    if (rc) goto fail;
    if ((rc = gr_op_int(ctx, "shard_size", 0, &shard))) goto fail;
    if (shard < 0) {
        rc = gr_seterr(GR_EINVAL, "merge: parameter 'shard_size' must be >= 0");
        goto fail;
    }
    if ((rc = gr_op_str(ctx, "tokenizer_source", NULL, &tok))) goto fail;
    int64_t chunk;
    if ((rc = gr_op_int(ctx, "chunk", (int64_t)1 << 22, &chunk))) goto fail;
    if (chunk < 0) {
        rc = gr_seterr(GR_EINVAL, "merge: parameter 'chunk' must be >= 0");
        goto fail;
    }
    j.chunk = (uint64_t)chunk;
    if ((rc = plan(&j))) goto fail;
    names = calloc(j.nt + 1, sizeof *names);
    if (!names) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < j.nt; i++) names[i] = j.tp[i].bt->name;
    j.nlayers = gr_surg_num_layers(gr_src_config(j.ref), names, j.nt);

    /* every tensor's parameters are checked before any work */
    uint64_t maxn = 1, total = 0;
    for (size_t i = 0; i < j.nt; i++) {
        const gr_src_tensor *b = j.tp[i].bt;
        uint64_t need = streams(&j, &j.tp[i]) ? j.chunk : b->nelem;
        if (need > maxn) maxn = need;
        total += b->nelem;
        if (!gr_dtype_is_float(b->dtype)) continue;
        for (size_t mi = 0; mi < j.k; mi++) {
            gr_merge_model x;
            if (j.tp[i].use[mi] == USE_SKIP) continue;
            if ((rc = model_params(&j, mi, b->name, &x))) goto fail;
            gr_merge_model g0;
            if (j.global && j.o.method != GR_MERGE_PCB &&
                (!(rc = global_params(&j, mi, &g0)) &&
                 (g0.density != x.density || g0.gamma != x.gamma || g0.epsilon != x.epsilon))) {
                rc = gr_seterr(GR_EINVAL,
                               "merge: scope global needs one density (gamma, epsilon) per model "
                               "for the whole model; model %zu varies at tensor '%s'",
                               mi, b->name);
                goto fail;
            }
            if (rc) goto fail;
        }
        double tt;
        if (j.t && (rc = resolve(NULL, j.t, b->name, j.nlayers, 0, &tt, NULL))) goto fail;
        if (j.t && !(tt >= 0 && tt <= 1)) {
            rc = gr_seterr(GR_EINVAL, "merge: tensor '%s': t = %g outside [0, 1]", b->name, tt);
            goto fail;
        }
    }
    base = malloc(maxn * sizeof *base);
    in = calloc(j.k, sizeof *in);
    sub = calloc(j.k, sizeof *sub);
    mm = calloc(j.k, sizeof *mm);
    if (!base || !in || !sub || !mm) {
        rc = gr_seterr(GR_ENOMEM, "merge: out of memory");
        goto fail;
    }
    for (size_t mi = 0; mi < j.k; mi++)
        if (!(in[mi] = malloc(maxn * sizeof(float)))) {
            rc = gr_seterr(GR_ENOMEM, "merge: out of memory for %zu inputs of %llu elements", j.k,
                           (unsigned long long)maxn);
            goto fail;
        }

    if (j.global && j.o.method == GR_MERGE_PCB) {
        if (!(pcb = gr_pcb_global_new(j.k, j.o.pcb_ratio, j.threads))) {
            rc = gr_adderr(gr_errcode(), "merge: pcb scope global");
            goto fail;
        }
        if ((rc = pcb_passes(&j, pcb, base, in))) goto fail;
    } else if (j.global && (rc = global_passes(&j, base, in))) {
        goto fail;
    }

    if (!(w = gr_stw_new(ctx->outdir, (uint64_t)shard))) {
        rc = gr_errcode();
        goto fail;
    }
    for (size_t i = 0; i < j.nt; i++) {
        const gr_src_tensor *b = j.tp[i].bt;
        gr_dtype dt = gr_dtype_is_float(b->dtype) && j.have_dtype ? j.dtype : b->dtype;
        if ((rc = gr_stw_add(w, b->name, dt, b->ndim, b->shape))) goto fail;
    }
    if ((rc = gr_stw_meta(w, "format", "pt")) ||
        (rc = gr_stw_meta(w, "graft.merge.method", gr_merge_method_name(j.o.method))) ||
        (rc = gr_stw_begin(w)))
        goto fail;

    double done = 0;
    for (size_t i = 0; i < j.nt; i++) {
        mtensor *tp = &j.tp[i];
        const gr_src_tensor *b = tp->bt;
        uint64_t n = b->nelem;
        if (gr_op_cancelled(ctx)) {
            rc = gr_seterr(GR_ECANCEL, "merge: cancelled");
            goto fail;
        }
        if (!gr_dtype_is_float(b->dtype)) { /* carried through untouched */
            const gr_tensor *raw = gr_src_raw(j.ref, b);
            if (!raw) {
                rc = gr_seterr(GR_EFORMAT, "merge: tensor '%s' of %s: dtype %s stored sparse",
                               b->name, gr_src_role(j.ref), gr_dtype_name(b->dtype));
                goto fail;
            }
            if ((rc = gr_stw_write(w, raw->data, raw->nbytes))) goto fail;
            continue;
        }
        if (!pcb && streams(&j, tp)) {
            if ((rc = merge_streamed(&j, tp, base, in, sub, mm, w, done, (double)total))) goto fail;
            done += (double)n;
            gr_op_progress(ctx, done, (double)total, "%s", b->name);
            continue;
        }
        const float *bp = NULL;
        if (j.base) {
            if ((rc = gr_src_read(j.base, b, n, base))) goto fail;
            gr_src_release(j.base, b);
            bp = base;
        }
        size_t k = 0;
        for (size_t mi = 0; mi < j.k; mi++) {
            if (tp->use[mi] == USE_SKIP && !(pcb)) continue;
            if (tp->use[mi] == USE_SKIP)
                memset(in[mi], 0, n * sizeof(float));
            else if ((rc = read_input(&j, tp, mi, bp, in[mi])))
                goto fail;
            if (j.global && !pcb && tp->use[mi] != USE_SKIP &&
                (rc = gr_prune_global_apply(j.m[mi].g, in[mi], n, NULL)))
                goto fail;
            if ((rc = model_params(&j, mi, b->name, &mm[k]))) goto fail;
            if (j.global) mm[k].density = 1; /* already pruned model-wide */
            sub[k++] = in[mi];
        }
        gr_merge_opts o = j.o;
        if (j.t && (rc = resolve(NULL, j.t, b->name, j.nlayers, 0, &o.t, NULL))) goto fail;
        /* the base buffer receives the result (out may alias base; without a
         * base it is free scratch) */
        if (pcb) {
            if ((rc = gr_pcb_global_apply(pcb, base, (const float *const *)in, n, o.lambda, base)))
                goto fail;
        } else if (k == 0) {
            if (!j.base) { /* cannot happen: the first model defines the tensors */
                rc = gr_seterr(GR_EINVAL, "merge: tensor '%s': no model provides it", b->name);
                goto fail;
            }
        } else {
            gr_merge_tinfo ti = {b->name, (size_t)n,
                                 b->ndim >= 1 && b->shape[b->ndim - 1] > 0
                                     ? (size_t)b->shape[b->ndim - 1]
                                     : (b->ndim >= 1 ? (size_t)(n ? n : 1) : 1)};
            if ((rc = gr_merge_tensor(&o, &ti, bp, sub, j.in_kind, mm, k, base))) goto fail;
        }
        if ((rc = gr_stw_write_f32(w, base, n))) goto fail;
        done += (double)n;
        gr_op_progress(ctx, done, (double)total, "%s", b->name);
    }
    if ((rc = gr_stw_finish(w))) goto fail;
    gr_stw_destroy(&w);
    if ((rc = gr_surg_copy_model_files(gr_src_dir(j.ref), ctx->outdir,
                                       tok ? GR_SURG_COPY_CONFIG : GR_SURG_COPY_ALL)))
        goto fail;
    if (tok && (rc = gr_surg_copy_model_files(tok, ctx->outdir, GR_SURG_COPY_TOKENIZER))) goto fail;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    gr_buf_printf(&m, "{\"method\":\"%s\",\"scope\":\"%s\",\"tensors\":%zu,\"elements\":%llu,",
                  gr_merge_method_name(j.o.method), j.global ? "global" : "tensor", j.nt,
                  (unsigned long long)total);
    gr_buf_puts(&m, "\"models\":[");
    for (size_t mi = 0; mi < j.k; mi++) {
        gr_buf_printf(&m, "%s{\"path\":", mi ? "," : "");
        gr_buf_json_str(&m, gr_src_path(j.m[mi].src), strlen(gr_src_path(j.m[mi].src)));
        gr_buf_printf(&m, ",\"kind\":\"%s\"}", gr_src_kind_name(gr_src_kind_of(j.m[mi].src)));
    }
    gr_buf_puts(&m, "],\"seconds\":");
    gr_buf_json_num(&m, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    gr_buf_putc(&m, ',');
    gr_warns_json(&j.warns, &m);
    gr_buf_putc(&m, '}');
    if (m.oom) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = gr_op_set_metrics(ctx, m.data))) goto fail;
    goto out;
fail:
    gr_stw_destroy(&w);
    gr_surg_clean_outdir(ctx->outdir);
out:
    gr_stw_destroy(&w);
    gr_pcb_global_destroy(&pcb);
    for (size_t mi = 0; in && mi < j.k; mi++) free(in[mi]);
    free(in);
    free(sub);
    free(mm);
    free(base);
    free(names);
    for (size_t i = 0; j.tp && i < j.nt; i++) free(j.tp[i].mt), free(j.tp[i].use);
    free(j.tp);
    for (size_t mi = 0; j.m && mi < j.k; mi++) {
        gr_src_close(&j.m[mi].src);
        for (size_t q = 0; q < 4; q++) gr_mparam_destroy(mslot(&j.m[mi], q));
        gr_prune_global_destroy(&j.m[mi].g);
    }
    free(j.m);
    for (size_t q = 0; q < 4; q++) gr_mparam_destroy(gslot(&j, q));
    gr_mparam_destroy(&j.t);
    gr_src_close(&j.base);
    gr_warns_free(&j.warns);
    gr_buf_free(&m);
    return rc;
}

const gr_op gr_op_merge = {
    .name = "merge",
    .version = 1,
    .summary = "merge models, deltas or LoRA adapters onto a base (linear, task arithmetic, TIES, "
               "DARE, breadcrumbs, DELLA, slerp, PCB, model stock)",
    .params = merge_params,
    .run = merge_run,
};
