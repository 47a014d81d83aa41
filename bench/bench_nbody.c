/* bench_nbody: integration and training speed of the nbody RL workload.
 *
 *   bench_nbody [EPISODES [THREADS]]   (defaults 5 and 1)
 *
 * 1. Hermite integration of the three-body problem (the Pythagorean problem
 *    to t = 20 at mu = 1e-3, and the paper's random triples): steps/s and
 *    force evaluations/s, with the pair interactions per second.
 * 2. One DQN optimisation step of the paper's network (13-200x9-10, batch
 *    128: target forward + policy forward/backward + AdamW), in GFLOP/s
 *    against OpenBLAS sgemm on 512^3 matrices measured in the same run (the
 *    machine limit for this kind of work), and against the plain-loop
 *    reference forward.
 * 3. Training episodes/s with the paper's defaults (100 chunks of 0.1 yr,
 *    one optimisation step per chunk), as nbody-train runs them.
 * THREADS sets OpenBLAS's thread count (the worker's --threads). */
#include "gr_dqn.h"
#include "gr_err.h"
#include "gr_nbody.h"
#include "nbody/gr_nbrl.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench_integration(void)
{
    gr_nbody *nb = gr_nbody_pythagorean();
    double t0 = now();
    if (gr_nbody_evolve(nb, 20, 1e-3)) fprintf(stderr, "evolve: %s\n", gr_errmsg());
    double dt = now() - t0;
    double steps = (double)gr_nbody_steps(nb), fe = (double)gr_nbody_force_evals(nb);
    printf("integration, Pythagorean to t=20, mu=1e-3: %.0f steps in %.3f s: %.2f M steps/s, "
           "%.2f M force evals/s (%.2f M pair interactions/s, %.0f ns/step)\n",
           steps, dt, steps / dt / 1e6, fe / dt / 1e6, 3 * fe / dt / 1e6, dt / steps * 1e9);
    gr_nbody_destroy(&nb);

    /* the paper's triples, 100 chunks at the middle of the action grid */
    double chunk = gr_nbody_default_chunk();
    steps = 0;
    t0 = now();
    for (uint64_t seed = 0; seed < 10; seed++) {
        nb = gr_nbody_random3(seed);
        for (int c = 1; c <= 100; c++)
            if (gr_nbody_evolve(nb, c * chunk, 1e-3)) break;
        steps += (double)gr_nbody_steps(nb);
        gr_nbody_destroy(&nb);
    }
    dt = now() - t0;
    printf("integration, 10 random triples x 100 chunks, mu=1e-3: %.0f steps in %.3f s: %.2f M "
           "steps/s\n",
           steps, dt, steps / dt / 1e6);
}

/* FLOPs of one optimisation step: target forward + policy forward + backward
 * (two products per layer) on B samples. */
static double train_flops(gr_qnet_shape s, int B)
{
    double ni = s.inputs, nh = s.hidden, no = s.outputs, nr = s.repeat;
    double fwd = 2.0 * B * (ni * nh + nr * nh * nh + nh * no);
    double bwd = 2.0 * B * (ni * nh + 2 * nr * nh * nh + 2 * nh * no);
    return 2 * fwd + bwd;
}

static void bench_train_step(void)
{
    /* machine limit: a square sgemm large enough to run at peak */
    enum { N = 512 };
    float *a = malloc(sizeof(float) * N * N), *b = malloc(sizeof(float) * N * N),
          *c = malloc(sizeof(float) * N * N);
    for (int i = 0; i < N * N; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, b, N, 0, c, N);
    int reps = 20;
    double t0 = now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, b, N, 0, c, N);
    double peak = 2.0 * N * N * N * reps / (now() - t0) / 1e9;
    free(a);
    free(b);
    free(c);

    gr_dqn_config cfg;
    gr_dqn_config_default(&cfg);
    gr_dqn *d = gr_dqn_new(&cfg);
    float s[13], s2[13];
    for (int i = 0; i < 2 * cfg.batch; i++) {
        for (int k = 0; k < 13; k++) s[k] = (float)sin(i + k), s2[k] = (float)cos(i * k);
        gr_dqn_remember(d, s, i % 10, (float)(i % 3), s2, i % 17 == 0);
    }
    double loss;
    gr_dqn_train(d, &loss);
    reps = 30;
    t0 = now();
    for (int r = 0; r < reps; r++) gr_dqn_train(d, &loss);
    double per = (now() - t0) / reps;
    double gf = train_flops(cfg.shape, cfg.batch) / per / 1e9;
    printf("DQN optimisation step (13-200x9-10, batch 128): %.2f ms, %.1f GFLOP/s = %.0f%% of "
           "sgemm %d^3 (%.1f GFLOP/s) in this run\n",
           per * 1e3, gf, 100 * gf / peak, N, peak);

    /* against the plain-loop reference forward on the same batch */
    float *in = malloc(sizeof(float) * 128 * 13), *out = malloc(sizeof(float) * 128 * 10);
    double *ref = malloc(sizeof(double) * 128 * 10);
    for (int i = 0; i < 128 * 13; i++) in[i] = (float)sin(i);
    gr_qnet *q = gr_dqn_policy(d);
    t0 = now();
    for (int r = 0; r < reps; r++) gr_qnet_forward(q, in, 128, out);
    double tb = (now() - t0) / reps;
    t0 = now();
    gr_qnet_forward_ref(q, in, 128, ref);
    double tr = now() - t0;
    printf("forward pass, batch 128: BLAS %.3f ms, plain reference loop %.3f ms (%.1fx)\n",
           tb * 1e3, tr * 1e3, tr / tb);
    free(in);
    free(out);
    free(ref);
    gr_dqn_destroy(&d);
}

static int count_episode(void *ud, const gr_nbrl_episode *ep)
{
    double *acc = ud;
    acc[0] += ep->chunks;
    acc[1] += (double)ep->steps;
    return 0;
}

static void bench_training(int episodes)
{
    gr_nbrl_train_cfg c;
    gr_nbrl_train_default(&c);
    c.episodes = episodes;
    gr_dqn *agent = NULL;
    double acc[2] = {0, 0};
    double t0 = now();
    int rc = gr_nbrl_train(&c, count_episode, acc, &agent);
    double dt = now() - t0;
    if (rc) {
        fprintf(stderr, "training: %s\n", gr_errmsg());
        return;
    }
    printf("training, paper defaults, %d episodes: %.2f s, %.3f episodes/s (%.0f chunks = "
           "optimisation steps, %.0f integration steps); 2000 episodes would take %.1f min\n",
           episodes, dt, episodes / dt, acc[0], acc[1], 2000 * dt / episodes / 60);
    gr_dqn_destroy(&agent);
}

int main(int argc, char **argv)
{
    int episodes = argc > 1 ? atoi(argv[1]) : 5;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (episodes < 1 || threads < 1) {
        fprintf(stderr, "usage: bench_nbody [EPISODES [THREADS]]\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    printf("bench_nbody: OpenBLAS threads %d\n", threads);
    bench_integration();
    bench_train_step();
    bench_training(episodes);
    return 0;
}
