/* th_llama: the tensors of a llama checkpoint (names and shapes in the
 * order transformers writes them), for the tests and benchmarks that build
 * random models to load. */
#ifndef TH_LLAMA_H
#define TH_LLAMA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct th_llama_dims {
    int vocab, hidden, inter, layers, heads, kv_heads, head_dim;
} th_llama_dims;

typedef struct th_tensor_spec {
    char name[96];
    int64_t rows, cols; /* cols 0: a vector (a norm weight) */
} th_tensor_spec;

/* Room th_llama_specs needs for a model of `layers` layers. */
#define TH_LLAMA_NSPECS(layers) (3 + 9 * (size_t)(layers))

/* Fills s (TH_LLAMA_NSPECS(d->layers) entries) and returns the count:
 * embedding, per layer the attention and MLP projections with their norms,
 * the final norm and an untied lm_head. */
static inline size_t th_llama_specs(const th_llama_dims *d, th_tensor_spec *s)
{
    size_t n = 0;
#define TH_ADD(r, c, ...)                                                                          \
    do {                                                                                           \
        snprintf(s[n].name, sizeof s[n].name, __VA_ARGS__);                                        \
        s[n].rows = r;                                                                             \
        s[n].cols = c;                                                                             \
        n++;                                                                                       \
    } while (0)
    const int Q = d->heads * d->head_dim, KV = d->kv_heads * d->head_dim;
    TH_ADD(d->vocab, d->hidden, "model.embed_tokens.weight");
    for (int l = 0; l < d->layers; l++) {
        TH_ADD(d->hidden, 0, "model.layers.%d.input_layernorm.weight", l);
        TH_ADD(Q, d->hidden, "model.layers.%d.self_attn.q_proj.weight", l);
        TH_ADD(KV, d->hidden, "model.layers.%d.self_attn.k_proj.weight", l);
        TH_ADD(KV, d->hidden, "model.layers.%d.self_attn.v_proj.weight", l);
        TH_ADD(d->hidden, Q, "model.layers.%d.self_attn.o_proj.weight", l);
        TH_ADD(d->hidden, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        TH_ADD(d->inter, d->hidden, "model.layers.%d.mlp.gate_proj.weight", l);
        TH_ADD(d->inter, d->hidden, "model.layers.%d.mlp.up_proj.weight", l);
        TH_ADD(d->hidden, d->inter, "model.layers.%d.mlp.down_proj.weight", l);
    }
    TH_ADD(d->hidden, 0, "model.norm.weight");
    TH_ADD(d->vocab, d->hidden, "lm_head.weight");
#undef TH_ADD
    return n;
}

#endif
