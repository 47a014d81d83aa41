/* gr_dqn: a deep Q-network agent (Mnih et al. 2015, in the form of the
 * PyTorch DQN tutorial): an MLP Q-network with a repeated shared hidden
 * layer, hand-written backprop on OpenBLAS, AdamW, Huber loss, replay
 * buffer, soft-updated target network and an epsilon-greedy schedule. */
#ifndef GR_DQN_H
#define GR_DQN_H

#include <stddef.h>
#include <stdint.h>

/* ---- the Q-network ----
 * inputs -> hidden (ReLU) -> [hidden -> hidden, one shared weight matrix,
 * ReLU] x repeat -> outputs (linear). Parameters are fp32, weights stored
 * row-major as (out, in) like torch.nn.Linear. */
typedef struct gr_qnet_shape {
    int inputs, hidden, repeat, outputs;
} gr_qnet_shape;

#define GR_QNET_MAX_WIDTH  4096
#define GR_QNET_MAX_REPEAT 64
#define GR_QNET_NTENSORS   6

typedef struct gr_qnet gr_qnet;

/* Checks a shape: widths 1..GR_QNET_MAX_WIDTH, repeat 0..GR_QNET_MAX_REPEAT.
 * GR_EINVAL names the field. */
int gr_qnet_shape_check(const gr_qnet_shape *s);
/* A network with torch.nn.Linear's default initialisation (weights and biases
 * uniform in +-1/sqrt(fan_in)) drawn from gr_rng keyed by seed. NULL with
 * gr_errmsg() on a bad shape or no memory. */
gr_qnet *gr_qnet_new(const gr_qnet_shape *s, uint64_t seed);
void gr_qnet_destroy(gr_qnet **q);
gr_qnet_shape gr_qnet_get_shape(const gr_qnet *q);

/* Parameters as one flat fp32 array, in tensor order (see gr_qnet_tensor);
 * gradients alongside, same layout. */
size_t gr_qnet_nparams(const gr_qnet *q);
float *gr_qnet_params(gr_qnet *q);
const float *gr_qnet_params_c(const gr_qnet *q);
float *gr_qnet_grads(gr_qnet *q);
void gr_qnet_zero_grads(gr_qnet *q);
/* Tensor i (0..GR_QNET_NTENSORS-1) of the flat array: name ("in.weight",
 * "in.bias", "hidden.weight", "hidden.bias", "out.weight", "out.bias"),
 * 1 or 2 dims, and its offset in the flat array. */
typedef struct gr_qnet_tensor {
    const char *name;
    int ndim;
    int64_t shape[2];
    size_t offset, count;
} gr_qnet_tensor;
gr_qnet_tensor gr_qnet_tensor_info(const gr_qnet *q, int i);
/* The same for a shape alone (to check a file before allocating a network). */
gr_qnet_tensor gr_qnet_shape_tensor(const gr_qnet_shape *s, int i);
/* dst = src (same shape, else GR_EINVAL); dst = tau*src + (1-tau)*dst. */
int gr_qnet_copy(gr_qnet *dst, const gr_qnet *src);
int gr_qnet_soft_update(gr_qnet *dst, const gr_qnet *src, float tau);

/* Q-values of B states: in (B, inputs) -> out (B, outputs). Keeps the
 * activations so that gr_qnet_backward can follow. B >= 1. */
int gr_qnet_forward(gr_qnet *q, const float *in, int B, float *out);
/* Plain-loop reference of the forward pass in double (no BLAS), for tests. */
void gr_qnet_forward_ref(const gr_qnet *q, const float *in, int B, double *out);
/* Accumulates into the gradients dLoss/dparams for dout = dLoss/dout (B,
 * outputs) of the last gr_qnet_forward call (same B). */
int gr_qnet_backward(gr_qnet *q, const float *dout);

/* Huber (smooth L1) loss with threshold delta, averaged over B samples, of
 * the Q-value of each sample's action against its target: forward, then
 * backward with the gradients accumulated. Returns 0 and *loss. */
int gr_qnet_huber_step(gr_qnet *q, const float *in, int B, const int *actions, const float *targets,
                       float delta, double *loss);
/* The same loss in double from the reference forward (no side effects). */
double gr_qnet_huber_ref(const gr_qnet *q, const float *in, int B, const int *actions,
                         const float *targets, float delta);

/* ---- AdamW (decoupled weight decay, optional AMSGrad) ---- */
typedef struct gr_adamw gr_adamw;
gr_adamw *gr_adamw_new(size_t nparams, float lr, float beta1, float beta2, float eps,
                       float weight_decay, int amsgrad);
void gr_adamw_destroy(gr_adamw **o);
/* One update of params from grads (torch.optim.AdamW semantics). */
void gr_adamw_step(gr_adamw *o, float *params, const float *grads);

/* ---- the agent ---- */
typedef struct gr_dqn_config {
    gr_qnet_shape shape;
    float lr, beta1, beta2, adam_eps, weight_decay;
    int amsgrad;
    float grad_clip;                      /* clamp each gradient to +-grad_clip (0 = off) */
    float huber_delta;                    /* threshold of the Huber loss */
    float gamma;                          /* discount */
    float tau;                            /* soft target update rate */
    int batch;                            /* minibatch size */
    int replay;                           /* replay buffer capacity (transitions) */
    double eps_start, eps_end, eps_decay; /* eps = end + (start-end) exp(-steps/decay) */
    uint64_t seed;
} gr_dqn_config;

/* The paper's agent (reference/nbody-rl.md): 13 -> 200 -> 200 x 9 -> 10,
 * AdamW lr 1e-3 (betas 0.9/0.999, eps 1e-8, weight decay 0.01, AMSGrad as in
 * the PyTorch tutorial), gradients clamped to +-100, Huber delta 1, batch
 * 128, replay 10,000, gamma 0.99, tau 0.005, epsilon 0.9 -> 0.05 with decay
 * constant 1000 steps, seed 0. */
void gr_dqn_config_default(gr_dqn_config *c);
/* Checks every field; GR_EINVAL names the field and its allowed range. */
int gr_dqn_config_check(const gr_dqn_config *c);

typedef struct gr_dqn gr_dqn;
gr_dqn *gr_dqn_new(const gr_dqn_config *c);
void gr_dqn_destroy(gr_dqn **d);

/* Greedy action (argmax Q, lowest index on ties) for one state. */
int gr_dqn_greedy(gr_dqn *d, const float *state);
/* Epsilon-greedy action; counts one step of the epsilon schedule. */
int gr_dqn_act(gr_dqn *d, const float *state);
/* Current epsilon, and the number of gr_dqn_act calls so far. */
double gr_dqn_epsilon(const gr_dqn *d);
uint64_t gr_dqn_steps(const gr_dqn *d);
/* Stores a transition (copied); the oldest is dropped when full. */
int gr_dqn_remember(gr_dqn *d, const float *s, int a, float r, const float *s2, int done);
size_t gr_dqn_memory(const gr_dqn *d);
/* One optimisation step on a minibatch drawn without replacement from the
 * replay buffer, then a soft update of the target network. Returns 1 with
 * *loss set when it trained, 0 when the buffer holds fewer than batch
 * transitions, or a GR_E* code. */
int gr_dqn_train(gr_dqn *d, double *loss);
/* The policy network (borrowed; valid until gr_dqn_destroy). */
gr_qnet *gr_dqn_policy(gr_dqn *d);
const gr_dqn_config *gr_dqn_get_config(const gr_dqn *d);

/* Index of the largest of n values (lowest index on ties). */
int gr_argmax(const float *v, int n);

#endif
