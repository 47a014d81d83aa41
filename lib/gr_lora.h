/* gr_lora: PEFT LoRA adapters read as deltas (delta = s·B·A with OpenBLAS)
 * and deltas factored into adapters by truncated SVD (LAPACK). */
#ifndef GR_LORA_H
#define GR_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "gr_json.h"
#include "gr_st.h"

#define GR_LORA_CONFIG  "adapter_config.json"
#define GR_LORA_WEIGHTS "adapter_model.safetensors"
#define GR_LORA_PREFIX  "base_model.model."

typedef enum {
    GR_LORA_LINEAR,    /* lora_A [r, in], lora_B [out, r]: delta = s·B·A [out, in]
                          (transposed to [in, out] with fan_in_fan_out) */
    GR_LORA_EMBEDDING, /* lora_embedding_A [r, vocab], _B [dim, r]: delta = s·(B·A)ᵀ */
    GR_LORA_BIAS,      /* lora_B.bias [out] (lora_bias: true): delta = s·bias */
    GR_LORA_FULL,      /* a whole tensor the adapter replaces (modules_to_save,
                          bias: all): delta = tensor − base */
} gr_lora_kind;

/* One tensor of the model that the adapter changes. Borrowed from gr_lora. */
typedef struct gr_lora_entry {
    const char *target; /* tensor name in the model, e.g. "model.layers.0.mlp.down_proj.weight" */
    const char *module; /* module name, e.g. "model.layers.0.mlp.down_proj" */
    gr_lora_kind kind;
    int ndim; /* of the delta (2 for LINEAR/EMBEDDING, 1 for BIAS) */
    int64_t shape[GR_ST_MAX_DIMS];
    uint64_t nelem;
    int rank;               /* r after rank_pattern (0 for FULL/BIAS) */
    double alpha;           /* lora_alpha after alpha_pattern */
    double scale;           /* alpha/r, or alpha/sqrt(r) with use_rslora (1 for FULL) */
    int transpose;          /* delta is (B·A)ᵀ (fan_in_fan_out or an embedding) */
    const gr_tensor *a, *b; /* A and B; BIAS: b is lora_B.bias; FULL: a is the tensor */
} gr_lora_entry;

typedef struct gr_lora gr_lora;

/* 1 if path is a directory holding adapter_config.json. */
int gr_lora_is_adapter(const char *path);
/* Opens a PEFT adapter directory: reads adapter_config.json (peft_type LORA;
 * r, lora_alpha, use_rslora, fan_in_fan_out, rank_pattern, alpha_pattern),
 * maps adapter_model.safetensors and pairs every lora_A with its lora_B.
 * Rejects, naming the file and tensor: a lora_A without lora_B (or the
 * reverse), ranks that disagree between A, B and the config, DoRA
 * (use_dora or lora_magnitude_vector tensors), convolution adapters (A not
 * 2-D), non-float tensors, names outside "base_model.model.". */
gr_lora *gr_lora_open(const char *dir);
void gr_lora_close(gr_lora **l);
const gr_json *gr_lora_config(const gr_lora *l);
const char *gr_lora_dir(const gr_lora *l);
/* Entries sorted by target name. */
size_t gr_lora_count(const gr_lora *l);
const gr_lora_entry *gr_lora_at(const gr_lora *l, size_t i);
const gr_lora_entry *gr_lora_find(const gr_lora *l, const char *target);

/* Computes the delta of a LINEAR, EMBEDDING or BIAS entry into dst
 * (e->nelem floats, row-major in the target's layout) with one sgemm using
 * the calling thread's OpenBLAS thread setting. GR_EINVAL for FULL entries
 * (their delta needs the base). */
int gr_lora_delta(const gr_lora_entry *e, float *dst);
/* The same with a plain triple loop accumulating in double (the reference
 * the tests hold gr_lora_delta against). */
int gr_lora_delta_ref(const gr_lora_entry *e, float *dst);

/* PEFT's pattern rule for rank_pattern / alpha_pattern keys: key matches
 * module when module == key, or the Python regex (.*\.)?(key)$ matches the
 * whole module name. Keys are Python regexes; \d \w \s and their upper-case
 * forms are translated for POSIX extended regexes. Returns 1, 0, or
 * GR_EINVAL for a key that is not a valid regex. */
int gr_lora_pattern_match(const char *key, const char *module);

/* ---- extraction ---- */
/* Factors delta [rows, cols] (row-major) as B·A by truncated SVD:
 * delta ≈ U_r S_r V_rᵀ, A = sqrt(S_r)·V_rᵀ [r, cols], B = U_r·sqrt(S_r)
 * [rows, r]. r is at most max_rank and min(rows, cols); singular values
 * <= abs_threshold or <= rel_threshold·s_max are dropped (0 disables each).
 * *a and *b are malloc'ed (caller frees; NULL when *rank is 0); *sv (may be
 * NULL) receives all min(rows, cols) singular values (caller frees);
 * *resid (may be NULL) the Frobenius norm of what was dropped. delta is not
 * modified. */
int gr_lora_factor(const float *delta, int64_t rows, int64_t cols, int max_rank,
                   double abs_threshold, double rel_threshold, float **a, float **b, int *rank,
                   float **sv, double *resid);

#endif
