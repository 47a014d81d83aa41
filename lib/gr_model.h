/* gr_model: decoder-only transformer checkpoints (llama, mistral, qwen2,
 * gpt2): config.json → architecture, and the weights converted to fp32 in the
 * layout the forward pass (gr_forward) multiplies with: all at load
 * (resident), or a layer / a chunk of rows at a time from the mapped files
 * when the fp32 weights would exceed a memory budget (streaming). */
#ifndef GR_MODEL_H
#define GR_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "gr_json.h"

/* Caps that keep hostile configs from overflowing size arithmetic. */
#define GR_MODEL_MAX_DIM    (1 << 20) /* hidden, intermediate, vocab, heads*head_dim */
#define GR_MODEL_MAX_LAYERS 4096
#define GR_MODEL_MAX_POS    (1 << 24)

typedef enum { GR_FAMILY_LLAMA, GR_FAMILY_GPT2 } gr_family;
typedef enum { GR_ACT_SILU, GR_ACT_GELU_TANH, GR_ACT_GELU, GR_ACT_RELU } gr_act;
typedef enum { GR_ROPE_NONE, GR_ROPE_DEFAULT, GR_ROPE_LINEAR, GR_ROPE_LLAMA3 } gr_rope_type;

/* What config.json says about the architecture. Plain value type. */
typedef struct gr_model_cfg {
    char model_type[16]; /* "llama", "mistral", "qwen2", "gpt2" */
    gr_family family;    /* llama/mistral/qwen2 share one code path */
    int vocab, hidden, inter, layers, heads, kv_heads, head_dim;
    int max_pos;     /* max_position_embeddings / n_positions */
    double norm_eps; /* rms_norm_eps / layer_norm_epsilon */
    int tie;         /* lm_head is the embedding matrix (absent from the file) */
    int qkv_bias;    /* q/k/v projections carry biases (qwen2, llama attention_bias) */
    int o_bias;      /* output projection carries a bias (llama attention_bias) */
    int mlp_bias;    /* MLP projections carry biases (llama mlp_bias, gpt2) */
    gr_act act;
    /* Rotary embeddings (llama family). */
    gr_rope_type rope;
    double rope_theta;
    double rope_factor, rope_low_freq, rope_high_freq; /* linear / llama3 */
    double rope_orig_max_pos;                          /* llama3 */
    /* Sliding-window attention: layers >= sliding_from attend to the last
     * `sliding_window` keys only (0 = full attention everywhere). */
    int sliding_window, sliding_from;
    /* gpt2: divide scores by sqrt(head_dim) (scale_attn_weights) and
     * additionally by layer+1 (scale_attn_by_inverse_layer_idx). */
    int scale_attn, scale_by_layer;
} gr_model_cfg;

/* Reads config.json (cfg, parsed; `what` names it in errors). Unsupported
 * model_type, activation or rope type → GR_EUNSUP; missing, mistyped or
 * inconsistent fields (heads not dividing, odd head_dim, ...) → GR_EINVAL
 * naming the file and the field. */
int gr_model_cfg_parse(const gr_json *cfg, const char *what, gr_model_cfg *out);

/* Rotary inverse frequencies inv_freq[head_dim/2] in fp32 the way
 * transformers computes them, including the llama3 transformation
 * (wavelengths above original_max/low_freq_factor slowed by `factor`, below
 * original_max/high_freq_factor kept, linear in between). */
void gr_model_rope_inv_freq(const gr_model_cfg *c, float *inv_freq);

/* Weights of one layer in fp32, every matrix row-major [out][in] (nn.Linear
 * layout; gpt2's Conv1D [in][out] is transposed at load). Bias pointers are
 * NULL when the architecture has none; *_b of a norm is NULL for RMSNorm. */
typedef struct gr_layer_w {
    const float *ln1_w, *ln1_b; /* (C) */
    const float *wqkv, *bqkv;   /* (H*hd + 2*KV*hd, C): q heads, then k heads, then v heads */
    const float *wo, *bo;       /* (C, H*hd) */
    const float *ln2_w, *ln2_b; /* (C) */
    const float *wup, *bup;     /* llama: (2I, C) gate rows then up rows; gpt2: (I, C) */
    const float *wdown, *bdown; /* (C, I) */
} gr_layer_w;

/* What gr_model_weights returns. Resident models: every pointer set.
 * Streaming models: only norm_w/norm_b (the others are NULL); their layers,
 * embedding rows and lm_head rows come from gr_model_layer,
 * gr_model_embed_row, gr_model_pos_row and gr_model_head_rows. */
typedef struct gr_model_w {
    const float *embed;           /* (V, C) */
    const float *pos;             /* (max_pos, C) learned positions (gpt2), else NULL */
    const gr_layer_w *layer;      /* [layers] */
    const float *norm_w, *norm_b; /* final norm (C); norm_b NULL for RMSNorm */
    const float *lm_head;         /* (V, C); the embedding when tied */
} gr_model_w;

typedef struct gr_model gr_model;

typedef enum {
    GR_MODEL_AUTO,     /* stream when the fp32 weights exceed max_fp32_bytes (or
                        * GRAFT_MODEL_STREAM=1 is set), else resident */
    GR_MODEL_RESIDENT, /* every weight converted to fp32 once, at load */
    GR_MODEL_STREAM    /* weights stay in the mapped files, converted when used */
} gr_model_mode;

typedef struct gr_model_opts {
    gr_model_mode mode;
    /* AUTO: the most fp32 weight bytes held resident; 0 = half of the
     * machine's physical memory. */
    uint64_t max_fp32_bytes;
} gr_model_opts;

/* Loads a checkpoint directory (config.json + model.safetensors, or shards
 * with model.safetensors.index.json). Every tensor the architecture needs
 * must be present with a float dtype (F32/F16/BF16/F64) and the expected
 * shape: checked here, in both modes, before any weight is used. Resident:
 * every weight is converted to fp32 now and the files are closed. Streaming:
 * the files stay mapped (page cache, evictable) and weights are converted
 * when used, a layer or a chunk of rows at a time, to the same fp32 values in
 * the same layout, so a forward pass gives the same numbers in both modes.
 * Returns NULL with gr_errmsg() naming the file and tensor or field on
 * failure. gr_model_load(dir) is gr_model_load_opts(dir, NULL) (AUTO with the
 * default budget). */
gr_model *gr_model_load(const char *dir);
gr_model *gr_model_load_opts(const char *dir, const gr_model_opts *opts);
void gr_model_destroy(gr_model **m);

const gr_model_cfg *gr_model_config(const gr_model *m);
const gr_model_w *gr_model_weights(const gr_model *m);

/* Number of scalar weights (the tied lm_head counted once). */
uint64_t gr_model_nparams(const gr_model *m);
/* 1 when the weights are streamed, 0 when resident. */
int gr_model_streaming(const gr_model *m);
/* Floats a buffer for gr_model_layer must hold (the largest layer). */
size_t gr_model_layer_floats(const gr_model *m);

/* The weights of layer l. Resident: pointers into the model, buf unused (may
 * be NULL). Streaming: converted into buf (gr_model_layer_floats floats),
 * split over `threads` OpenMP threads; out points into buf, valid until buf
 * is reused. 0, or an error code with gr_errmsg(). */
int gr_model_layer(const gr_model *m, int l, float *buf, int threads, gr_layer_w *out);
/* Row `token` of the embedding / row `pos` of the learned positions (gpt2;
 * GR_EINVAL for a model without them) into dst (hidden floats). */
int gr_model_embed_row(const gr_model *m, int token, float *dst);
int gr_model_pos_row(const gr_model *m, int pos, float *dst);
/* Rows [v0, v0+n) of lm_head (n, hidden): a pointer into the model when
 * resident, else converted into buf (n * hidden floats) and buf returned.
 * NULL with gr_errmsg() on failure. */
const float *gr_model_head_rows(const gr_model *m, int v0, int n, float *buf, int threads);

#endif
