/* gr_mlp: a small multi-layer perceptron classifier — linear layers with a
 * relu, tanh or gelu between them, softmax cross-entropy, hand-written
 * backpropagation on OpenBLAS sgemm (with a plain-loop reference beside it),
 * minibatch SGD or Adam seeded by the counter-based generator, and
 * checkpoints (model.safetensors + config.json) that the surgery ops read. */
#ifndef GR_MLP_H
#define GR_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "gr_dtype.h"

#define GR_MLP_MAX_LAYERS 16
#define GR_MLP_MAX_WIDTH  (1 << 20)
#define GR_MLP_MAX_PARAMS (1ULL << 28)
#define GR_MLP_MODEL_TYPE "graft-mlp"

typedef enum { GR_ACT_RELU, GR_ACT_TANH, GR_ACT_GELU } gr_act;
/* "relu" | "tanh" | "gelu" (GR_EINVAL otherwise), and back. gelu is the exact
 * form x·Φ(x) (erf), as torch.nn.GELU() by default. */
int gr_act_parse(const char *s, gr_act *out);
const char *gr_act_name(gr_act a);

/* The network: sizes[0] inputs, sizes[1..nlayers-1] hidden widths,
 * sizes[nlayers] classes; layer l maps sizes[l] to sizes[l+1] with weight
 * W_l (sizes[l+1], sizes[l]) and bias b_l (sizes[l+1]), the activation after
 * every layer but the last. Inputs are normalised first: x' = (x - offset) *
 * scale (offset 0, scale 1 unless set). */
typedef struct gr_mlp gr_mlp;

/* nlayers in 1..GR_MLP_MAX_LAYERS, every size in 1..GR_MLP_MAX_WIDTH, at
 * most GR_MLP_MAX_PARAMS parameters, sizes[nlayers] >= 2. Parameters start at
 * zero (see gr_mlp_init). NULL with gr_errmsg() set. */
gr_mlp *gr_mlp_new(const int64_t *sizes, int nlayers, gr_act act);
void gr_mlp_destroy(gr_mlp **m);

int gr_mlp_nlayers(const gr_mlp *m);
int64_t gr_mlp_size(const gr_mlp *m, int i); /* i in 0..nlayers */
gr_act gr_mlp_act(const gr_mlp *m);
uint64_t gr_mlp_nparams(const gr_mlp *m);
void gr_mlp_set_input_norm(gr_mlp *m, double offset, double scale);
double gr_mlp_input_offset(const gr_mlp *m);
double gr_mlp_input_scale(const gr_mlp *m);

/* Parameters and gradients of layer l (borrowed; weight (out, in)). */
float *gr_mlp_weight(gr_mlp *m, int l);
float *gr_mlp_bias(gr_mlp *m, int l);
const float *gr_mlp_grad_weight(const gr_mlp *m, int l);
const float *gr_mlp_grad_bias(const gr_mlp *m, int l);

/* torch.nn.Linear's default initialisation: every weight and bias of layer l
 * uniform in [-1/sqrt(in), 1/sqrt(in)), drawn from Philox keyed by (seed,
 * tensor name), so the same seed gives the same network everywhere. */
void gr_mlp_init(gr_mlp *m, uint64_t seed);

/* Logits (B, classes) of rows x (B, inputs). */
int gr_mlp_forward(gr_mlp *m, const float *x, size_t B, float *logits);
/* Mean softmax cross-entropy of the batch (labels y[i] in [0, classes)) and
 * its gradient with respect to every parameter (stored in the gradient
 * buffers, overwritten). */
int gr_mlp_backward(gr_mlp *m, const float *x, const int32_t *y, size_t B, double *loss);
/* The same two computed by plain loops with double accumulators: the
 * reference the sgemm versions are tested against. */
int gr_mlp_forward_ref(gr_mlp *m, const float *x, size_t B, float *logits);
int gr_mlp_backward_ref(gr_mlp *m, const float *x, const int32_t *y, size_t B, double *loss);

/* Per-row cross-entropy loss[i] and predicted class pred[i] (the first
 * largest logit) of n rows, in batches; either output may be NULL. */
int gr_mlp_predict(gr_mlp *m, const float *x, const int32_t *y, size_t n, double *loss,
                   int32_t *pred);

typedef enum { GR_OPT_SGD, GR_OPT_ADAM } gr_opt;
int gr_opt_parse(const char *s, gr_opt *out);
const char *gr_opt_name(gr_opt o);

typedef struct gr_mlp_train_opts {
    gr_opt opt;
    double lr;                /* > 0 */
    double momentum;          /* sgd: heavy-ball momentum in [0, 1) */
    double weight_decay;      /* decoupled (AdamW-style for adam): p -= lr·wd·p */
    double beta1, beta2, eps; /* adam (0.9, 0.999, 1e-8 when 0) */
    int epochs;               /* >= 0 */
    size_t batch;             /* >= 1 */
    uint64_t seed;            /* order of the rows in each epoch */
    /* Called after every epoch with its mean training loss and accuracy
     * (over the minibatches as they were trained); a non-zero return stops
     * training and is returned (e.g. GR_ECANCEL). May be NULL. */
    int (*epoch_cb)(void *ud, int epoch, double loss, double acc);
    void *ud;
} gr_mlp_train_opts;

/* Trains on n rows: each epoch visits every row once in an order drawn from
 * Philox (seed, epoch), in minibatches of opts->batch (the last one smaller).
 * Deterministic: same inputs, same result. */
int gr_mlp_train(gr_mlp *m, const float *x, const int32_t *y, size_t n, const gr_mlp_train_opts *o);

/* Writes dir/model.safetensors (tensors layers.L.weight (out, in) and
 * layers.L.bias in dtype dt: F32, F16 or BF16) and dir/config.json
 * ({"model_type": "graft-mlp", "layer_sizes": [...], "activation": ...,
 * "num_labels": ..., "input_offset": ..., "input_scale": ...} plus
 * extra_json, members without braces, may be NULL). Each file is written
 * atomically; dir is created if needed. */
int gr_mlp_save(const gr_mlp *m, const char *dir, gr_dtype dt, const char *extra_json);
/* Loads a checkpoint directory written by gr_mlp_save, or by any op that
 * keeps its config.json and tensors (merge, apply): config.json must say
 * model_type graft-mlp with valid layer_sizes and activation, every tensor
 * must be present with its shape (F32/F16/BF16/F64) and no other tensor may
 * be; a delta (graft.kind metadata) is refused. NULL with gr_errmsg() naming
 * the file, tensor or field. */
gr_mlp *gr_mlp_load(const char *dir);

#endif
