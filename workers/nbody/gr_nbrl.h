/* gr_nbrl: the reinforcement-learning time-step problem of
 * reference/nbody-rl.md on top of gr_nbody and gr_dqn: state, actions and
 * reward, chunked runs under a fixed or learnt mu, DQN training, and the
 * policy artifact (model.safetensors + config.json). Shared by the nbody and
 * nbody-train ops and bench_nbody. */
#ifndef GR_NBRL_H
#define GR_NBRL_H

#include <stddef.h>
#include <stdint.h>

#include "gr_dqn.h"
#include "gr_nbody.h"

#define GR_NBRL_NSTATE      13 /* (x, y)/10 and (vx, vy) of 3 bodies, -log10|dE| */
#define GR_NBRL_NACTIONS    10 /* the paper's grid */
#define GR_NBRL_MAX_ACTIONS 64
#define GR_NBRL_FORMAT      "graft.nbody-policy"
#define GR_NBRL_VERSION     1

/* The paper's 10 values of mu, log-spaced from 1e-4 to 1e-1. */
void gr_nbrl_default_actions(double mu[GR_NBRL_NACTIONS]);
/* Feature names in state order ("x0", "y0", ..., "vy2", "neg_log10_dE") and
 * the default scale per feature (positions 0.1, velocities 1, error term 1). */
const char *gr_nbrl_feature_name(int i);
void gr_nbrl_default_scale(float scale[GR_NBRL_NSTATE]);

/* "hermite" / "aarseth" <-> gr_nb_integrator; GR_EINVAL naming the parameter
 * `what` for an unknown name. */
int gr_nbrl_integrator_parse(const char *what, const char *name, gr_nb_integrator *out);
const char *gr_nbrl_integrator_name(gr_nb_integrator kind);

/* The state of a 3-body system whose relative energy error is de:
 * raw features times scale. GR_EINVAL unless the system has 3 bodies. */
int gr_nbrl_state(const gr_nbody *nb, double de, const float scale[GR_NBRL_NSTATE],
                  float out[GR_NBRL_NSTATE]);

/* Reward for chunk i >= 1 ending with relative energy error de under mu:
 *   R = -w1 log10(|de| / 1e-10) / (L^3 i) + w3 / |log10 mu|,
 * L = max(|log10 |de||, 1) (the floor keeps errors near 1 finite; such
 * episodes end anyway) and |de| floored at 1e-20. */
typedef struct gr_nbrl_reward {
    double w1, w3;
} gr_nbrl_reward;
#define GR_NBRL_W1 3000.0
#define GR_NBRL_W3 4.0
double gr_nbrl_reward_of(const gr_nbrl_reward *w, double de, double mu, int i);

/* ---- the policy artifact ----
 * A directory with config.json (format, version, architecture, actions, state
 * features and scale, chunk, reward weights, integrator and training summary)
 * and model.safetensors (the Q-network's six F32 tensors). */
typedef struct gr_nbrl_policy gr_nbrl_policy;

typedef struct gr_nbrl_policy_info {
    const double *actions; /* n_actions values of mu */
    int n_actions;
    const float *scale; /* GR_NBRL_NSTATE */
    double chunk;
    gr_nbrl_reward reward;
    const char *integrator;    /* trained with */
    const char *training_json; /* a JSON object with the training summary, or NULL */
} gr_nbrl_policy_info;

/* Writes the artifact into dir (created if needed): model.safetensors and
 * config.json, each crash-safe. The network's outputs must equal n_actions
 * and its inputs GR_NBRL_NSTATE. */
int gr_nbrl_policy_save(const gr_qnet *net, const gr_nbrl_policy_info *info, const char *dir);
/* Loads and checks an artifact directory: every config field, and every
 * tensor's presence, dtype and shape against the config's architecture.
 * NULL with a GR_EINVAL/GR_EFORMAT/GR_ENOTFOUND message naming the file, the
 * field or tensor and the rule. */
gr_nbrl_policy *gr_nbrl_policy_load(const char *dir);
/* The same from memory: config.json text and a safetensors image (both
 * borrowed); `what` names them in messages. The fuzz target's entry point. */
gr_nbrl_policy *gr_nbrl_policy_load_mem(const char *what, const char *config, size_t config_len,
                                        const void *weights, size_t weights_len);
void gr_nbrl_policy_destroy(gr_nbrl_policy **p);
/* Greedy action for a state (index into the actions). */
int gr_nbrl_policy_act(gr_nbrl_policy *p, const float state[GR_NBRL_NSTATE]);
const double *gr_nbrl_policy_actions(const gr_nbrl_policy *p, int *n);
const float *gr_nbrl_policy_scale(const gr_nbrl_policy *p);
double gr_nbrl_policy_chunk(const gr_nbrl_policy *p);
gr_qnet *gr_nbrl_policy_net(gr_nbrl_policy *p);

/* ---- chunked runs ---- */
typedef struct gr_nbrl_chunk {
    int chunk;      /* 1-based */
    double t, de;   /* time at the end, signed relative energy error */
    double mu;      /* used during the chunk */
    int action;     /* index into the policy's actions, -1 for fixed mu */
    uint64_t steps; /* cumulative */
} gr_nbrl_chunk;

/* Called after every chunk (rows so far); return nonzero to stop. */
typedef int (*gr_nbrl_chunk_fn)(void *ud, const gr_nbody *nb, const gr_nbrl_chunk *row);

typedef struct gr_nbrl_run_cfg {
    double chunk;           /* time units per chunk (> 0) */
    int chunks;             /* number of chunks (>= 1) */
    double t_end;           /* if > 0: run to exactly t_end instead (the last chunk shorter) */
    double mu;              /* fixed mu when policy is NULL */
    gr_nbrl_policy *policy; /* or NULL */
    double stop_error;      /* stop once |dE| exceeds it (0 = never) */
    gr_nbrl_chunk_fn on_chunk;
    void *ud;
} gr_nbrl_run_cfg;

typedef struct gr_nbrl_run_result {
    double e0, de_final, de_max; /* |dE/E0| at the end and largest at chunk ends */
    int chunks;
    int collapsed; /* the step collapsed (collision); the run stopped there */
    int stopped;   /* stop_error or on_chunk ended it early */
    uint64_t action_count[GR_NBRL_MAX_ACTIONS];
} gr_nbrl_run_result;

/* Integrates nb chunk by chunk choosing mu per chunk. A collapse is a
 * result (collapsed = 1), not an error; returns GR_EINVAL on a bad cfg or a
 * policy with a non-3-body system, GR_ECANCEL. */
int gr_nbrl_run(gr_nbody *nb, const gr_nbrl_run_cfg *cfg, gr_nbrl_run_result *res);

/* ---- training ---- */
typedef struct gr_nbrl_train_cfg {
    gr_dqn_config dqn;
    int episodes;      /* default 2000 */
    int chunks;        /* per episode at most (default 100) */
    double chunk;      /* time units (default 0.1 yr) */
    double stop_error; /* episode ends when |dE| exceeds it (default 0.1) */
    gr_nbrl_reward reward;
    gr_nb_integrator integrator;
    int train_every; /* optimisation steps every this many chunks (default 1) */
    double actions[GR_NBRL_MAX_ACTIONS];
    int n_actions;
    float scale[GR_NBRL_NSTATE];
    uint64_t seed; /* initial conditions of episode e: random3(key(seed, e)) */
    volatile int *cancel;
} gr_nbrl_train_cfg;

typedef struct gr_nbrl_episode {
    int episode; /* 0-based */
    uint64_t ic_seed;
    int chunks;
    double reward;      /* sum over the episode */
    double de_final;    /* |dE/E0| at the end */
    double log_mu_mean; /* mean log10 mu chosen */
    uint64_t steps;     /* integration steps */
    double loss;        /* mean training loss over the episode (NAN if none) */
    double epsilon;     /* at the end */
    int ended_early;    /* |dE| > stop_error or collapse */
} gr_nbrl_episode;

/* Paper defaults (dqn from gr_dqn_config_default with outputs = 10). */
void gr_nbrl_train_default(gr_nbrl_train_cfg *c);
int gr_nbrl_train_check(const gr_nbrl_train_cfg *c);
/* Trains; calls on_episode after each episode (return nonzero to cancel).
 * On success *agent is the trained agent (caller destroys). */
typedef int (*gr_nbrl_episode_fn)(void *ud, const gr_nbrl_episode *ep);
int gr_nbrl_train(const gr_nbrl_train_cfg *c, gr_nbrl_episode_fn on_episode, void *ud,
                  gr_dqn **agent);

#endif
