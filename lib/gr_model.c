/* gr_model: decoder-only transformer checkpoints (llama, mistral, qwen2,
 * gpt2): config.json → architecture, and the weights converted to fp32, all
 * at load (resident) or a layer / a chunk of rows at a time (streaming). */
#include "gr_model.h"
#include "gr_err.h"
#include "gr_st.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct plan_item plan_item;

#define NO_ITEM SIZE_MAX

struct gr_model {
    gr_model_cfg cfg;
    gr_model_w w;
    gr_layer_w *layer; /* resident: pointers; streaming: offsets + 1 (see OFF) */
    float *arena;      /* resident: every weight; streaming: the final norm only */
    uint64_t nparams;
    int stream;
    /* Where each weight comes from (streaming; freed once resident). Items
     * of layer l are [layer_item[l], layer_item[l+1]) and land at floats
     * [layer_off[l], layer_off[l+1]) of the resident layout. */
    gr_ckpt *ck;
    plan_item *items;
    size_t nitems;
    size_t *layer_item, *layer_off;
    size_t layer_max; /* floats of the largest layer */
    size_t tail_off;  /* first float of the final norm */
    size_t embed_i, pos_i, head_i;
};

/* ---------------------------------------------------------------- config */

/* Integer field: absent or null → def (def < 0 means required); otherwise an
 * integer in [lo, hi]. */
static int cfg_int(const gr_json *cfg, const char *what, const char *key, int64_t def, int64_t lo,
                   int64_t hi, int *out)
{
    const gr_json *v = gr_json_get(cfg, key);
    if (!v || v->type == GR_JSON_NULL) {
        if (def < 0) return gr_seterr(GR_EINVAL, "%s: missing field '%s'", what, key);
        *out = (int)def;
        return 0;
    }
    if (v->type != GR_JSON_NUM || !v->is_int)
        return gr_seterr(GR_EINVAL, "%s: field '%s' must be an integer", what, key);
    if (v->i < lo || v->i > hi)
        return gr_seterr(GR_EINVAL, "%s: field '%s' is %lld, outside [%lld, %lld]", what, key,
                         (long long)v->i, (long long)lo, (long long)hi);
    *out = (int)v->i;
    return 0;
}

/* Number field: absent or null → def (NAN means required); must be finite. */
static int cfg_num(const gr_json *obj, const char *what, const char *key, double def, double *out)
{
    const gr_json *v = gr_json_get(obj, key);
    if (!v || v->type == GR_JSON_NULL) {
        if (isnan(def)) return gr_seterr(GR_EINVAL, "%s: missing field '%s'", what, key);
        *out = def;
        return 0;
    }
    if (v->type != GR_JSON_NUM || !isfinite(v->num))
        return gr_seterr(GR_EINVAL, "%s: field '%s' must be a number", what, key);
    *out = v->num;
    return 0;
}

static int cfg_bool(const gr_json *cfg, const char *what, const char *key, int def, int *out)
{
    const gr_json *v = gr_json_get(cfg, key);
    if (!v || v->type == GR_JSON_NULL) return *out = def, 0;
    if (v->type != GR_JSON_BOOL)
        return gr_seterr(GR_EINVAL, "%s: field '%s' must be true or false", what, key);
    *out = v->boolean;
    return 0;
}

static int cfg_str(const gr_json *obj, const char *what, const char *key, const char *def,
                   const char **out)
{
    const gr_json *v = gr_json_get(obj, key);
    if (!v || v->type == GR_JSON_NULL) {
        if (!def) return gr_seterr(GR_EINVAL, "%s: missing field '%s'", what, key);
        *out = def;
        return 0;
    }
    if (v->type != GR_JSON_STR)
        return gr_seterr(GR_EINVAL, "%s: field '%s' must be a string", what, key);
    *out = v->str;
    return 0;
}

/* sliding_window: absent means the config classes' default of 4096, null
 * means none (0). */
static int cfg_window(const gr_json *cfg, const char *what, int *out)
{
    const gr_json *sw = gr_json_get(cfg, "sliding_window");
    if (sw && sw->type == GR_JSON_NULL) return *out = 0, 0;
    return cfg_int(cfg, what, "sliding_window", 4096, 0, INT32_MAX, out);
}

static int parse_act(const char *what, const char *key, const char *name, gr_act *out)
{
    static const struct {
        const char *name;
        gr_act act;
    } acts[] = {{"silu", GR_ACT_SILU},          {"swish", GR_ACT_SILU},
                {"gelu_new", GR_ACT_GELU_TANH}, {"gelu_pytorch_tanh", GR_ACT_GELU_TANH},
                {"gelu", GR_ACT_GELU},          {"relu", GR_ACT_RELU}};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (!strcmp(acts[i].name, name)) return *out = acts[i].act, 0;
    return gr_seterr(GR_EUNSUP,
                     "%s: %s '%s' is not supported (supported: silu, gelu_new, "
                     "gelu_pytorch_tanh, gelu, relu)",
                     what, key, name);
}

/* Rotary settings: either rope_parameters {rope_theta, rope_type, ...}
 * (newer files) or top-level rope_theta + rope_scaling {rope_type|type, ...}. */
static int parse_rope(const gr_json *cfg, const char *what, gr_model_cfg *c)
{
    const gr_json *rp = gr_json_get(cfg, "rope_parameters");
    const gr_json *params = NULL; /* object holding factor & co */
    const char *type = "default";
    const char *where = "rope_scaling";
    int rc;
    if (rp && rp->type != GR_JSON_NULL) {
        if (rp->type != GR_JSON_OBJ)
            return gr_seterr(GR_EINVAL, "%s: field 'rope_parameters' must be an object", what);
        double top = 0;
        if ((rc = cfg_num(cfg, what, "rope_theta", 10000.0, &top))) return rc;
        if ((rc = cfg_num(rp, what, "rope_theta", top, &c->rope_theta))) return rc;
        if ((rc = cfg_str(rp, what, "rope_type", "default", &type))) return rc;
        params = rp;
        where = "rope_parameters";
    } else {
        if ((rc = cfg_num(cfg, what, "rope_theta", 10000.0, &c->rope_theta))) return rc;
        const gr_json *rs = gr_json_get(cfg, "rope_scaling");
        if (rs && rs->type != GR_JSON_NULL) {
            if (rs->type != GR_JSON_OBJ)
                return gr_seterr(GR_EINVAL, "%s: field 'rope_scaling' must be an object", what);
            const char *t2 = NULL;
            if ((rc = cfg_str(rs, what, "type", "", &t2))) return rc;
            if ((rc = cfg_str(rs, what, "rope_type", t2[0] ? t2 : NULL, &type)))
                return gr_seterr(GR_EINVAL, "%s: rope_scaling needs 'rope_type' (or 'type')", what);
            params = rs;
        }
    }
    if (!(c->rope_theta >= 1 && c->rope_theta <= 1e30))
        return gr_seterr(GR_EINVAL, "%s: rope_theta must be in [1, 1e30] (is %g)", what,
                         c->rope_theta);
    if (!strcmp(type, "default")) {
        c->rope = GR_ROPE_DEFAULT;
        return 0;
    }
    if (!strcmp(type, "linear")) {
        c->rope = GR_ROPE_LINEAR;
        if ((rc = cfg_num(params, what, "factor", NAN, &c->rope_factor))) return rc;
        if (!(c->rope_factor >= 1e-3 && c->rope_factor <= 1e6))
            return gr_seterr(GR_EINVAL, "%s: %s.factor must be in [1e-3, 1e6]", what, where);
        return 0;
    }
    if (!strcmp(type, "llama3")) {
        c->rope = GR_ROPE_LLAMA3;
        if ((rc = cfg_num(params, what, "factor", NAN, &c->rope_factor)) ||
            (rc = cfg_num(params, what, "low_freq_factor", NAN, &c->rope_low_freq)) ||
            (rc = cfg_num(params, what, "high_freq_factor", NAN, &c->rope_high_freq)) ||
            (rc = cfg_num(params, what, "original_max_position_embeddings", NAN,
                          &c->rope_orig_max_pos)))
            return gr_adderr(rc, "%s", where);
        if (!(c->rope_factor >= 1e-3 && c->rope_factor <= 1e6) || !(c->rope_low_freq > 0) ||
            !(c->rope_high_freq > c->rope_low_freq) || !(c->rope_high_freq <= 1e6) ||
            !(c->rope_orig_max_pos >= 1 && c->rope_orig_max_pos <= 1e12))
            return gr_seterr(GR_EINVAL,
                             "%s: %s of type llama3 needs factor in [1e-3, 1e6], 0 < "
                             "low_freq_factor < high_freq_factor <= 1e6 and "
                             "original_max_position_embeddings in [1, 1e12]",
                             what, where);
        return 0;
    }
    return gr_seterr(GR_EUNSUP,
                     "%s: %s rope_type '%s' is not supported (supported: default, linear, "
                     "llama3)",
                     what, where, type);
}

static int parse_llama(const gr_json *cfg, const char *what, gr_model_cfg *c)
{
    int rc;
    const char *act = NULL;
    const int64_t D = GR_MODEL_MAX_DIM;
    int64_t def_max_pos = 2048; /* LlamaConfig's default */
    if (!strcmp(c->model_type, "mistral")) def_max_pos = 4096 * 32;
    if (!strcmp(c->model_type, "qwen2")) def_max_pos = 32768;
    if ((rc = cfg_int(cfg, what, "vocab_size", -1, 1, D, &c->vocab)) ||
        (rc = cfg_int(cfg, what, "hidden_size", -1, 1, D, &c->hidden)) ||
        (rc = cfg_int(cfg, what, "intermediate_size", -1, 1, D, &c->inter)) ||
        (rc = cfg_int(cfg, what, "num_hidden_layers", -1, 1, GR_MODEL_MAX_LAYERS, &c->layers)) ||
        (rc = cfg_int(cfg, what, "num_attention_heads", -1, 1, D, &c->heads)) ||
        (rc = cfg_int(cfg, what, "num_key_value_heads", c->heads, 1, D, &c->kv_heads)) ||
        (rc = cfg_int(cfg, what, "max_position_embeddings", def_max_pos, 1, GR_MODEL_MAX_POS,
                      &c->max_pos)) ||
        (rc = cfg_num(cfg, what, "rms_norm_eps", 1e-6, &c->norm_eps)) ||
        (rc = cfg_str(cfg, what, "hidden_act", "silu", &act)) ||
        (rc = parse_act(what, "hidden_act", act, &c->act)) ||
        (rc = cfg_bool(cfg, what, "tie_word_embeddings", 0, &c->tie)))
        return rc;
    const gr_json *hd = gr_json_get(cfg, "head_dim");
    if (hd && hd->type != GR_JSON_NULL) {
        if ((rc = cfg_int(cfg, what, "head_dim", -1, 1, D, &c->head_dim))) return rc;
    } else {
        if (c->hidden % c->heads)
            return gr_seterr(GR_EINVAL,
                             "%s: hidden_size %d is not a multiple of num_attention_heads %d "
                             "(and head_dim is not given)",
                             what, c->hidden, c->heads);
        c->head_dim = c->hidden / c->heads;
    }
    if (c->heads % c->kv_heads)
        return gr_seterr(GR_EINVAL,
                         "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                         what, c->heads, c->kv_heads);
    if (c->head_dim % 2)
        return gr_seterr(GR_EINVAL, "%s: head_dim %d must be even for rotary embeddings", what,
                         c->head_dim);
    if ((int64_t)c->heads * c->head_dim > D)
        return gr_seterr(GR_EINVAL, "%s: num_attention_heads * head_dim is too large", what);
    if (!(c->norm_eps >= 0)) return gr_seterr(GR_EINVAL, "%s: rms_norm_eps must be >= 0", what);
    if ((rc = parse_rope(cfg, what, c))) return rc;

    if (!strcmp(c->model_type, "qwen2")) {
        c->qkv_bias = 1;
        int use_sw = 0;
        if ((rc = cfg_bool(cfg, what, "use_sliding_window", 0, &use_sw)) ||
            (rc = cfg_window(cfg, what, &c->sliding_window)) ||
            (rc = cfg_int(cfg, what, "max_window_layers", 28, 0, INT32_MAX, &c->sliding_from)))
            return rc;
        if (!use_sw) c->sliding_window = 0;
    } else if (!strcmp(c->model_type, "mistral")) {
        if ((rc = cfg_window(cfg, what, &c->sliding_window))) return rc;
        c->sliding_from = 0;
    } else {
        int ab = 0, mb = 0;
        if ((rc = cfg_bool(cfg, what, "attention_bias", 0, &ab)) ||
            (rc = cfg_bool(cfg, what, "mlp_bias", 0, &mb)))
            return rc;
        c->qkv_bias = c->o_bias = ab;
        c->mlp_bias = mb;
    }
    return 0;
}

static int parse_gpt2(const gr_json *cfg, const char *what, gr_model_cfg *c)
{
    int rc;
    const char *act = NULL;
    const int64_t D = GR_MODEL_MAX_DIM;
    if ((rc = cfg_int(cfg, what, "vocab_size", -1, 1, D, &c->vocab)) ||
        (rc = cfg_int(cfg, what, "n_embd", -1, 1, D, &c->hidden)) ||
        (rc = cfg_int(cfg, what, "n_layer", -1, 1, GR_MODEL_MAX_LAYERS, &c->layers)) ||
        (rc = cfg_int(cfg, what, "n_head", -1, 1, D, &c->heads)) ||
        (rc = cfg_int(cfg, what, "n_positions", 1024, 1, GR_MODEL_MAX_POS, &c->max_pos)) ||
        (rc = cfg_num(cfg, what, "layer_norm_epsilon", 1e-5, &c->norm_eps)) ||
        (rc = cfg_str(cfg, what, "activation_function", "gelu_new", &act)) ||
        (rc = parse_act(what, "activation_function", act, &c->act)) ||
        (rc = cfg_bool(cfg, what, "tie_word_embeddings", 1, &c->tie)) ||
        (rc = cfg_bool(cfg, what, "scale_attn_weights", 1, &c->scale_attn)) ||
        (rc = cfg_bool(cfg, what, "scale_attn_by_inverse_layer_idx", 0, &c->scale_by_layer)))
        return rc;
    if ((rc = cfg_int(cfg, what, "n_inner", 4LL * c->hidden, 1, D, &c->inter))) return rc;
    if (c->hidden % c->heads)
        return gr_seterr(GR_EINVAL, "%s: n_embd %d is not a multiple of n_head %d", what, c->hidden,
                         c->heads);
    if (!(c->norm_eps >= 0))
        return gr_seterr(GR_EINVAL, "%s: layer_norm_epsilon must be >= 0", what);
    c->kv_heads = c->heads;
    c->head_dim = c->hidden / c->heads;
    c->qkv_bias = c->o_bias = c->mlp_bias = 1;
    c->rope = GR_ROPE_NONE;
    return 0;
}

int gr_model_cfg_parse(const gr_json *cfg, const char *what, gr_model_cfg *out)
{
    gr_model_cfg c;
    memset(&c, 0, sizeof c);
    if (!what) what = "config.json";
    if (!cfg || cfg->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "%s: must be a JSON object", what);
    const char *mt = NULL;
    int rc = cfg_str(cfg, what, "model_type", NULL, &mt);
    if (rc) return rc;
    if (!strcmp(mt, "llama") || !strcmp(mt, "mistral") || !strcmp(mt, "qwen2")) {
        c.family = GR_FAMILY_LLAMA;
    } else if (!strcmp(mt, "gpt2")) {
        c.family = GR_FAMILY_GPT2;
    } else {
        return gr_seterr(GR_EUNSUP,
                         "%s: model_type '%.64s' is not supported (supported: llama, mistral, "
                         "qwen2, gpt2)",
                         what, mt);
    }
    snprintf(c.model_type, sizeof c.model_type, "%s", mt);
    rc = c.family == GR_FAMILY_GPT2 ? parse_gpt2(cfg, what, &c) : parse_llama(cfg, what, &c);
    if (rc) return rc;
    *out = c;
    return 0;
}

void gr_model_rope_inv_freq(const gr_model_cfg *c, float *inv_freq)
{
    const int half = c->head_dim / 2;
    const float base = (float)c->rope_theta;
    for (int i = 0; i < half; i++) {
        /* transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in fp32 */
        float e = (float)(2 * i) / (float)c->head_dim;
        float f = 1.0f / (float)pow((double)base, (double)e);
        if (c->rope == GR_ROPE_LINEAR) f = (float)(f / c->rope_factor);
        if (c->rope == GR_ROPE_LLAMA3) {
            const double old = c->rope_orig_max_pos, lo = c->rope_low_freq, hi = c->rope_high_freq,
                         factor = c->rope_factor;
            double wavelen = 2.0 * M_PI / f;
            double g = f;
            if (wavelen > old / lo) {
                g = f / factor; /* long wavelengths: interpolate positions */
            } else if (wavelen >= old / hi) {
                double smooth = (old / wavelen - lo) / (hi - lo);
                g = (1.0 - smooth) * f / factor + smooth * f;
            } /* short wavelengths: unchanged */
            f = (float)g;
        }
        inv_freq[i] = f;
    }
}

/* ---------------------------------------------------------------- weights */

/* How a tensor from the file lands in the arena. */
struct plan_item {
    const gr_tensor *t;
    size_t off;         /* destination offset in floats */
    int64_t rows, cols; /* expected shape [rows, cols] ([rows] for vectors: cols 0) */
    int transpose;      /* Conv1D [in, out] stored as [out, in] */
};

typedef struct planner {
    const gr_ckpt *ck;
    const char *dir;
    plan_item *items;
    size_t n, cap;
    size_t total; /* floats */
    const char *prefix;
} planner;

/* Finds `name` and checks its shape; records where it goes and returns the
 * offset through *off. */
static int plan(planner *p, const char *name, int64_t rows, int64_t cols, int transpose,
                size_t *off)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", p->prefix, name);
    const gr_tensor *t = gr_ckpt_find(p->ck, full);
    if (!t)
        return gr_seterr(GR_ENOTFOUND, "%s: missing tensor '%s' (needed by this architecture)",
                         p->dir, full);
    if (!gr_dtype_is_float(t->dtype))
        return gr_seterr(GR_EFORMAT,
                         "%s: tensor '%s' has dtype %s; weights must be F32, F16, "
                         "BF16 or F64",
                         t->file, full, gr_dtype_name(t->dtype));
    /* Conv1D stores [in, out]: the file's shape is the transpose of ours. */
    int64_t want0 = transpose ? cols : rows, want1 = transpose ? rows : cols;
    int ok = cols ? (t->ndim == 2 && t->shape[0] == want0 && t->shape[1] == want1)
                  : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok) {
        char got[128] = "";
        size_t k = 0;
        for (int d = 0; d < t->ndim && k < sizeof got - 24; d++)
            k += (size_t)snprintf(got + k, sizeof got - k, "%s%lld", d ? ", " : "",
                                  (long long)t->shape[d]);
        if (cols)
            return gr_seterr(GR_EFORMAT,
                             "%s: tensor '%s' has shape [%s], config.json implies "
                             "[%lld, %lld]",
                             t->file, full, got, (long long)want0, (long long)want1);
        return gr_seterr(GR_EFORMAT, "%s: tensor '%s' has shape [%s], config.json implies [%lld]",
                         t->file, full, got, (long long)rows);
    }
    if (p->n == p->cap) {
        size_t nc = p->cap ? 2 * p->cap : 64;
        plan_item *ni = realloc(p->items, nc * sizeof *ni);
        if (!ni) return gr_seterr(GR_ENOMEM, "out of memory");
        p->items = ni;
        p->cap = nc;
    }
    plan_item *it = &p->items[p->n++];
    it->t = t;
    it->off = p->total;
    it->rows = rows;
    it->cols = cols;
    it->transpose = transpose;
    *off = p->total;
    /* Shapes are capped by GR_MODEL_MAX_DIM (2^20), so rows*cols < 2^40 and
     * the running total over at most 4096 layers fits easily. */
    p->total += (size_t)(rows * (cols ? cols : 1));
    return 0;
}

/* Offsets are resolved into pointers once the arena exists; until then the
 * pointer fields hold offsets + 1 (0 means absent). */
#define OFF(x) ((const float *)(uintptr_t)((x) + 1))

static int plan_llama(planner *p, const gr_model_cfg *c, gr_model *m)
{
    const int64_t C = c->hidden, I = c->inter, V = c->vocab, hd = c->head_dim;
    const int64_t Q = (int64_t)c->heads * hd, KV = (int64_t)c->kv_heads * hd;
    size_t off;
    int rc;
    char n[160];
    p->prefix = "";
    if ((rc = plan(p, "model.embed_tokens.weight", V, C, 0, &off))) return rc;
    m->w.embed = OFF(off);
    m->embed_i = p->n - 1;
    for (int l = 0; l < c->layers; l++) {
        gr_layer_w *L = &m->layer[l];
        m->layer_item[l] = p->n;
        m->layer_off[l] = p->total;
#define T(name, r, cc, field)                                                                      \
    do {                                                                                           \
        snprintf(n, sizeof n, "model.layers.%d.%s", l, name);                                      \
        if ((rc = plan(p, n, r, cc, 0, &off))) return rc;                                          \
        if (field) *(field) = OFF(off);                                                            \
    } while (0)
        T("input_layernorm.weight", C, 0, &L->ln1_w);
        /* q, k, v land back to back: one fused (Q + 2KV, C) matrix. */
        T("self_attn.q_proj.weight", Q, C, &L->wqkv);
        T("self_attn.k_proj.weight", KV, C, (const float **)NULL);
        T("self_attn.v_proj.weight", KV, C, (const float **)NULL);
        if (c->qkv_bias) {
            T("self_attn.q_proj.bias", Q, 0, &L->bqkv);
            T("self_attn.k_proj.bias", KV, 0, (const float **)NULL);
            T("self_attn.v_proj.bias", KV, 0, (const float **)NULL);
        }
        T("self_attn.o_proj.weight", C, Q, &L->wo);
        if (c->o_bias) T("self_attn.o_proj.bias", C, 0, &L->bo);
        T("post_attention_layernorm.weight", C, 0, &L->ln2_w);
        /* gate rows then up rows: one fused (2I, C) matrix. */
        T("mlp.gate_proj.weight", I, C, &L->wup);
        T("mlp.up_proj.weight", I, C, (const float **)NULL);
        if (c->mlp_bias) {
            T("mlp.gate_proj.bias", I, 0, &L->bup);
            T("mlp.up_proj.bias", I, 0, (const float **)NULL);
        }
        T("mlp.down_proj.weight", C, I, &L->wdown);
        if (c->mlp_bias) T("mlp.down_proj.bias", C, 0, &L->bdown);
#undef T
    }
    m->layer_item[c->layers] = p->n;
    m->layer_off[c->layers] = m->tail_off = p->total;
    if ((rc = plan(p, "model.norm.weight", C, 0, 0, &off))) return rc;
    m->w.norm_w = OFF(off);
    if (c->tie) {
        m->w.lm_head = m->w.embed;
        m->head_i = m->embed_i;
    } else {
        if ((rc = plan(p, "lm_head.weight", V, C, 0, &off))) return rc;
        m->w.lm_head = OFF(off);
        m->head_i = p->n - 1;
    }
    return 0;
}

static int plan_gpt2(planner *p, const gr_model_cfg *c, gr_model *m)
{
    const int64_t C = c->hidden, I = c->inter, V = c->vocab;
    size_t off;
    int rc;
    char n[160];
    /* GPT2LMHeadModel saves "transformer.*"; the original checkpoints do not. */
    p->prefix = gr_ckpt_find(p->ck, "transformer.wte.weight") ? "transformer." : "";
    if ((rc = plan(p, "wte.weight", V, C, 0, &off))) return rc;
    m->w.embed = OFF(off);
    m->embed_i = p->n - 1;
    if ((rc = plan(p, "wpe.weight", c->max_pos, C, 0, &off))) return rc;
    m->w.pos = OFF(off);
    m->pos_i = p->n - 1;
    for (int l = 0; l < c->layers; l++) {
        gr_layer_w *L = &m->layer[l];
        m->layer_item[l] = p->n;
        m->layer_off[l] = p->total;
#define T(name, r, cc, tr, field)                                                                  \
    do {                                                                                           \
        snprintf(n, sizeof n, "h.%d.%s", l, name);                                                 \
        if ((rc = plan(p, n, r, cc, tr, &off))) return rc;                                         \
        *(field) = OFF(off);                                                                       \
    } while (0)
        T("ln_1.weight", C, 0, 0, &L->ln1_w);
        T("ln_1.bias", C, 0, 0, &L->ln1_b);
        T("attn.c_attn.weight", 3 * C, C, 1, &L->wqkv);
        T("attn.c_attn.bias", 3 * C, 0, 0, &L->bqkv);
        T("attn.c_proj.weight", C, C, 1, &L->wo);
        T("attn.c_proj.bias", C, 0, 0, &L->bo);
        T("ln_2.weight", C, 0, 0, &L->ln2_w);
        T("ln_2.bias", C, 0, 0, &L->ln2_b);
        T("mlp.c_fc.weight", I, C, 1, &L->wup);
        T("mlp.c_fc.bias", I, 0, 0, &L->bup);
        T("mlp.c_proj.weight", C, I, 1, &L->wdown);
        T("mlp.c_proj.bias", C, 0, 0, &L->bdown);
#undef T
    }
    m->layer_item[c->layers] = p->n;
    m->layer_off[c->layers] = m->tail_off = p->total;
    if ((rc = plan(p, "ln_f.weight", C, 0, 0, &off))) return rc;
    m->w.norm_w = OFF(off);
    if ((rc = plan(p, "ln_f.bias", C, 0, 0, &off))) return rc;
    m->w.norm_b = OFF(off);
    if (c->tie) {
        m->w.lm_head = m->w.embed;
        m->head_i = m->embed_i;
    } else {
        p->prefix = "";
        if ((rc = plan(p, "lm_head.weight", V, C, 0, &off))) return rc;
        m->w.lm_head = OFF(off);
        m->head_i = p->n - 1;
    }
    return 0;
}

/* Threads for converting n elements: below about 256k a team costs more
 * than the conversion. */
static int conv_threads(uint64_t n, int threads)
{
    return threads > 1 && n >= (1u << 18) ? threads : 1;
}

/* Elements per gr_tensor_read_f32 call: gr_to_f32 converts up to 2^16 on
 * the calling thread, so the pieces below are spread over exactly the
 * threads asked for (larger calls would start their own team). */
#define READ_PIECE ((uint64_t)1 << 16)

/* Converts elements [e0, e0+n) of t to fp32 into dst, split over threads.
 * Every tensor was checked at load (float dtype, shape), so this fails only
 * if the conversion itself does; worker threads' messages stay in their
 * threads, so the caller's names the tensor. */
static int read_range(const gr_tensor *t, uint64_t e0, uint64_t n, float *dst, int threads)
{
    const int nt = conv_threads(n, threads);
    const int64_t np = (int64_t)((n + READ_PIECE - 1) / READ_PIECE);
    int bad = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static) reduction(| : bad)
#endif
    for (int64_t k = 0; k < np; k++) {
        const uint64_t a = (uint64_t)k * READ_PIECE, b = n - a < READ_PIECE ? n : a + READ_PIECE;
        bad |= gr_tensor_read_f32(t, e0 + a, b - a, dst + a) != 0;
    }
    return bad ? gr_seterr(GR_EFORMAT,
                           "%s: tensor '%s': cannot convert elements [%llu, %llu) to "
                           "fp32",
                           t->file, t->name, (unsigned long long)e0, (unsigned long long)(e0 + n))
               : 0;
}

/* Converts one planned tensor into dst (where its first float goes). */
static int fill_item(const plan_item *it, float *dst, int threads)
{
    const gr_tensor *t = it->t;
    if (!it->transpose) return read_range(t, 0, t->nelem, dst, threads);
    /* file [in=cols][out=rows] → ours [rows][cols], one input row at a time;
     * each thread takes a slice of the input rows */
    const int64_t rows = it->rows, cols = it->cols;
    const int nt = conv_threads(t->nelem, threads);
    int bad = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static, 1) reduction(| : bad)
#endif
    for (int k = 0; k < nt; k++) {
        const int64_t i0 = cols * k / nt, i1 = cols * (k + 1) / nt;
        float *row = malloc((size_t)rows * sizeof *row);
        if (!row) {
            bad |= 2;
            continue;
        }
        for (int64_t i = i0; i < i1 && !bad; i++) {
            if (gr_tensor_read_f32(t, (uint64_t)(i * rows), (uint64_t)rows, row)) bad |= 1;
            for (int64_t o = 0; o < rows && !bad; o++) dst[o * cols + i] = row[o];
        }
        free(row);
    }
    if (bad & 2) return gr_seterr(GR_ENOMEM, "out of memory");
    return bad ? gr_seterr(GR_EFORMAT, "%s: tensor '%s': cannot convert to fp32", t->file, t->name)
               : 0;
}

/* Pointer field p (offset + 1, see OFF) of a block whose float off0 is at
 * base. */
static const float *rel(const float *base, const float *p, size_t off0)
{
    return p ? base + ((uintptr_t)p - 1 - off0) : NULL;
}

static uint64_t default_budget(void)
{
    const long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psz <= 0) return UINT64_MAX; /* unknown: resident, as always */
    return (uint64_t)pages * (uint64_t)psz / 2;
}

static int want_stream(const gr_model_opts *o, size_t floats)
{
    const gr_model_mode mode = o ? o->mode : GR_MODEL_AUTO;
    if (mode != GR_MODEL_AUTO) return mode == GR_MODEL_STREAM;
    const char *e = getenv("GRAFT_MODEL_STREAM");
    if (e && !strcmp(e, "1")) return 1;
    const uint64_t budget = o && o->max_fp32_bytes ? o->max_fp32_bytes : default_budget();
    return (uint64_t)floats > budget / sizeof(float);
}

/* Every weight into one arena; the files are closed afterwards. */
static int load_resident(gr_model *m, const char *dir)
{
    int threads = 1; /* all cores, as gr_to_f32 uses for whole tensors */
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    m->arena = malloc(m->nparams * sizeof(float));
    if (!m->arena)
        return gr_seterr(GR_ENOMEM,
                         "%s: cannot allocate %zu MB for the fp32 weights (a smaller "
                         "memory budget streams them instead)",
                         dir, (size_t)(m->nparams * sizeof(float) >> 20));
    for (size_t i = 0; i < m->nitems; i++) {
        int rc = fill_item(&m->items[i], m->arena + m->items[i].off, threads);
        if (rc) return rc;
    }
    const float *a = m->arena;
    m->w.embed = rel(a, m->w.embed, 0);
    m->w.pos = rel(a, m->w.pos, 0);
    m->w.norm_w = rel(a, m->w.norm_w, 0);
    m->w.norm_b = rel(a, m->w.norm_b, 0);
    m->w.lm_head = rel(a, m->w.lm_head, 0);
    for (int l = 0; l < m->cfg.layers; l++) {
        gr_layer_w *L = &m->layer[l];
        const float **f[] = {&L->ln1_w, &L->ln1_b, &L->wqkv, &L->bqkv, &L->wo,    &L->bo,
                             &L->ln2_w, &L->ln2_b, &L->wup,  &L->bup,  &L->wdown, &L->bdown};
        for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) *f[k] = rel(a, *f[k], 0);
    }
    m->w.layer = m->layer;
    free(m->items);
    m->items = NULL;
    gr_ckpt_close(&m->ck);
    return 0;
}

/* Only the final norm is converted now (it sits between the last layer and
 * an untied lm_head); the rest stays in the mapped files. */
static int load_stream(gr_model *m)
{
    const size_t end = m->head_i != m->embed_i ? m->items[m->head_i].off : m->nparams;
    m->arena = malloc((end - m->tail_off + 1) * sizeof(float));
    if (!m->arena) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = m->layer_item[m->cfg.layers]; i < m->nitems; i++) {
        if (i == m->head_i) continue;
        int rc = fill_item(&m->items[i], m->arena + (m->items[i].off - m->tail_off), 1);
        if (rc) return rc;
    }
    m->w.norm_w = rel(m->arena, m->w.norm_w, m->tail_off);
    m->w.norm_b = rel(m->arena, m->w.norm_b, m->tail_off);
    m->w.embed = m->w.pos = m->w.lm_head = NULL;
    m->w.layer = NULL;
    m->stream = 1;
    return 0;
}

gr_model *gr_model_load(const char *dir)
{
    return gr_model_load_opts(dir, NULL);
}

gr_model *gr_model_load_opts(const char *dir, const gr_model_opts *opts)
{
    gr_model *m = NULL;
    gr_ckpt *ck = NULL;
    planner p = {0};
    char what[4200];
    ck = gr_ckpt_open(dir);
    if (!ck) return NULL;
    snprintf(what, sizeof what, "%s/config.json", gr_ckpt_dir(ck));
    const gr_json *cfg = gr_ckpt_config(ck);
    if (!cfg) {
        gr_seterr(GR_ENOTFOUND, "%s: missing (a model checkpoint needs its config.json)", what);
        goto fail;
    }
    m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->pos_i = NO_ITEM;
    if (gr_model_cfg_parse(cfg, what, &m->cfg)) goto fail;
    const size_t L = (size_t)m->cfg.layers;
    m->layer = calloc(L, sizeof *m->layer);
    m->layer_item = calloc(L + 1, sizeof *m->layer_item);
    m->layer_off = calloc(L + 1, sizeof *m->layer_off);
    if (!m->layer || !m->layer_item || !m->layer_off) goto oom;
    p.ck = ck;
    p.dir = dir;
    /* Checks every tensor's presence, dtype and shape in either mode. */
    if ((m->cfg.family == GR_FAMILY_GPT2 ? plan_gpt2 : plan_llama)(&p, &m->cfg, m)) goto fail;
    if (p.total > SIZE_MAX / sizeof(float)) {
        gr_seterr(GR_ENOMEM, "%s: model too large", dir);
        goto fail;
    }
    m->nparams = p.total;
    for (size_t l = 0; l < L; l++)
        if (m->layer_off[l + 1] - m->layer_off[l] > m->layer_max)
            m->layer_max = m->layer_off[l + 1] - m->layer_off[l];
    m->ck = ck;
    ck = NULL;
    m->items = p.items;
    m->nitems = p.n;
    p.items = NULL;
    if (want_stream(opts, p.total) ? load_stream(m) : load_resident(m, dir)) goto fail;
    return m;
oom:
    gr_seterr(GR_ENOMEM, "out of memory");
fail:
    free(p.items);
    gr_ckpt_close(&ck);
    gr_model_destroy(&m);
    return NULL;
}

void gr_model_destroy(gr_model **pm)
{
    if (!pm || !*pm) return;
    gr_model *m = *pm;
    free(m->arena);
    free(m->layer);
    free(m->layer_item);
    free(m->layer_off);
    free(m->items);
    gr_ckpt_close(&m->ck);
    free(m);
    *pm = NULL;
}

const gr_model_cfg *gr_model_config(const gr_model *m)
{
    return &m->cfg;
}

const gr_model_w *gr_model_weights(const gr_model *m)
{
    return &m->w;
}

uint64_t gr_model_nparams(const gr_model *m)
{
    return m->nparams;
}

int gr_model_streaming(const gr_model *m)
{
    return m->stream;
}

size_t gr_model_layer_floats(const gr_model *m)
{
    return m->layer_max;
}

int gr_model_layer(const gr_model *m, int l, float *buf, int threads, gr_layer_w *out)
{
    if (l < 0 || l >= m->cfg.layers)
        return gr_seterr(GR_EINVAL, "model: layer %d outside [0, %d)", l, m->cfg.layers);
    if (!m->stream) {
        *out = m->layer[l];
        return 0;
    }
    const size_t off0 = m->layer_off[l];
    for (size_t i = m->layer_item[l]; i < m->layer_item[l + 1]; i++) {
        int rc = fill_item(&m->items[i], buf + (m->items[i].off - off0), threads);
        if (rc) return rc;
    }
    const gr_layer_w *s = &m->layer[l];
    gr_layer_w L = {
        .ln1_w = rel(buf, s->ln1_w, off0),
        .ln1_b = rel(buf, s->ln1_b, off0),
        .wqkv = rel(buf, s->wqkv, off0),
        .bqkv = rel(buf, s->bqkv, off0),
        .wo = rel(buf, s->wo, off0),
        .bo = rel(buf, s->bo, off0),
        .ln2_w = rel(buf, s->ln2_w, off0),
        .ln2_b = rel(buf, s->ln2_b, off0),
        .wup = rel(buf, s->wup, off0),
        .bup = rel(buf, s->bup, off0),
        .wdown = rel(buf, s->wdown, off0),
        .bdown = rel(buf, s->bdown, off0),
    };
    *out = L;
    return 0;
}

int gr_model_embed_row(const gr_model *m, int token, float *dst)
{
    const int C = m->cfg.hidden;
    if (token < 0 || token >= m->cfg.vocab)
        return gr_seterr(GR_EINVAL, "model: token %d outside the vocabulary [0, %d)", token,
                         m->cfg.vocab);
    if (!m->stream) {
        memcpy(dst, m->w.embed + (size_t)token * C, (size_t)C * sizeof(float));
        return 0;
    }
    return read_range(m->items[m->embed_i].t, (uint64_t)token * C, (uint64_t)C, dst, 1);
}

int gr_model_pos_row(const gr_model *m, int pos, float *dst)
{
    const int C = m->cfg.hidden;
    if (m->pos_i == NO_ITEM)
        return gr_seterr(GR_EINVAL, "model: %s has no learned positions", m->cfg.model_type);
    if (pos < 0 || pos >= m->cfg.max_pos)
        return gr_seterr(GR_EINVAL, "model: position %d outside [0, %d)", pos, m->cfg.max_pos);
    if (!m->stream) {
        memcpy(dst, m->w.pos + (size_t)pos * C, (size_t)C * sizeof(float));
        return 0;
    }
    return read_range(m->items[m->pos_i].t, (uint64_t)pos * C, (uint64_t)C, dst, 1);
}

const float *gr_model_head_rows(const gr_model *m, int v0, int n, float *buf, int threads)
{
    const size_t C = (size_t)m->cfg.hidden;
    if (v0 < 0 || n < 1 || n > m->cfg.vocab - v0) {
        gr_seterr(GR_EINVAL, "model: lm_head rows [%d, %lld) outside [0, %d)", v0,
                  (long long)v0 + n, m->cfg.vocab);
        return NULL;
    }
    if (!m->stream) return m->w.lm_head + (size_t)v0 * C;
    if (read_range(m->items[m->head_i].t, (uint64_t)v0 * C, (uint64_t)n * C, buf, threads))
        return NULL;
    return buf;
}
