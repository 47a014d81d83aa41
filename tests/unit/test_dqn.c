/* Tests for gr_dqn: the BLAS forward pass against a plain double loop, the
 * hand-written backprop against finite differences of the loss, AdamW's
 * first step against its closed form, and learning: on a deterministic chain
 * MDP the greedy policy after training equals the optimal one computed by
 * value iteration. */
#include "gr_dqn.h"
#include "gr_err.h"
#include "gr_rng.h"
#include "gr_test.h"

static void fill_uniform(float *v, size_t n, uint64_t seed, double scale)
{
    gr_rng_stream rs;
    gr_rng_stream_init(&rs, seed, "test.dqn");
    for (size_t i = 0; i < n; i++) v[i] = (float)((2 * gr_rng_next_double(&rs) - 1) * scale);
}

static void test_forward_matches_reference(void)
{
    gr_qnet_shape s = {13, 200, 9, 10}; /* the paper's network */
    gr_qnet *q = gr_qnet_new(&s, 7);
    CHECK(q != NULL);
    CHECK_EQ_INT(gr_qnet_nparams(q), 200 * 13 + 200 + 200 * 200 + 200 + 10 * 200 + 10);
    enum { B = 5 };
    float in[B * 13], out[B * 10];
    double ref[B * 10];
    fill_uniform(in, B * 13, 1, 2.0);
    CHECK(gr_qnet_forward(q, in, B, out) == 0);
    gr_qnet_forward_ref(q, in, B, ref);
    double maxerr = 0, maxref = 0;
    for (int i = 0; i < B * 10; i++) {
        maxerr = fmax(maxerr, fabs(out[i] - ref[i]));
        maxref = fmax(maxref, fabs(ref[i]));
    }
    printf("forward: max |sgemm - reference| = %.3g (max |Q| %.3g)\n", maxerr, maxref);
    CHECK(maxref > 0);
    CHECK_MSG(maxerr <= 1e-5 * fmax(1, maxref), "max err %g", maxerr);
    /* one row alone gives the same as inside the batch */
    float one[10];
    CHECK(gr_qnet_forward(q, in + 2 * 13, 1, one) == 0);
    for (int k = 0; k < 10; k++) CHECK_NEAR(one[k], out[2 * 10 + k], 1e-5 * fmax(1, maxref));
    gr_qnet_destroy(&q);
}

/* Checks every gradient of net shape s against central differences of the
 * double-precision reference loss; returns the largest relative error. */
static double gradcheck(gr_qnet_shape s, int B, size_t stride)
{
    gr_qnet *q = gr_qnet_new(&s, 11);
    float *in = malloc((size_t)B * s.inputs * sizeof *in), *y = malloc((size_t)B * sizeof *y);
    int *a = malloc((size_t)B * sizeof *a);
    fill_uniform(in, (size_t)B * s.inputs, 2, 1.5);
    fill_uniform(y, (size_t)B, 3, 2.0); /* targets: some within, some beyond the Huber delta */
    for (int i = 0; i < B; i++) a[i] = i % s.outputs;
    double loss;
    gr_qnet_zero_grads(q);
    CHECK(gr_qnet_huber_step(q, in, B, a, y, 1.0f, &loss) == 0);
    CHECK_NEAR(loss, gr_qnet_huber_ref(q, in, B, a, y, 1.0f), 1e-5 * fmax(1, loss));
    float *p = gr_qnet_params(q);
    const float *g = gr_qnet_grads(q);
    double worst = 0;
    size_t checked = 0;
    for (size_t i = 0; i < gr_qnet_nparams(q); i += stride) {
        float p0 = p[i];
        float h = 1e-4f * fmaxf(1.0f, fabsf(p0));
        p[i] = p0 + h;
        double up = gr_qnet_huber_ref(q, in, B, a, y, 1.0f), pu = p[i];
        p[i] = p0 - h;
        double dn = gr_qnet_huber_ref(q, in, B, a, y, 1.0f), pd = p[i];
        p[i] = p0;
        double fd = (up - dn) / (pu - pd);
        double err = fabs(fd - g[i]) / fmax(1e-3, fabs(fd) + fabs(g[i]));
        if (err > worst) {
            worst = err;
            if (getenv("GR_TEST_VERBOSE"))
                printf("  param %zu: analytic %.6g, finite difference %.6g\n", i, g[i], fd);
        }
        checked++;
    }
    printf("gradcheck %d-%d(x%d)-%d, B=%d: %zu parameters, worst relative error %.3g\n", s.inputs,
           s.hidden, s.repeat, s.outputs, B, checked, worst);
    free(in);
    free(y);
    free(a);
    gr_qnet_destroy(&q);
    return worst;
}

static void test_backprop_finite_differences(void)
{
    /* every parameter of a small net with a repeated shared layer */
    CHECK(gradcheck((gr_qnet_shape){4, 6, 3, 3}, 7, 1) < 1e-4);
    /* no repeated layer */
    CHECK(gradcheck((gr_qnet_shape){3, 5, 0, 2}, 4, 1) < 1e-4);
    /* a sample of the paper's network */
    CHECK(gradcheck((gr_qnet_shape){13, 200, 9, 10}, 3, 997) < 1e-4);
}

static void test_adamw_first_step(void)
{
    /* torch.optim.AdamW: p <- p (1 - lr wd); then the bias-corrected first
     * step is lr * g / (|g| + eps') whatever |g|, for plain and AMSGrad. */
    for (int ams = 0; ams <= 1; ams++) {
        gr_adamw *o = gr_adamw_new(3, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, ams);
        float p[3] = {1.0f, -2.0f, 0.5f}, g[3] = {3.0f, -1e-3f, 0.0f};
        gr_adamw_step(o, p, g);
        CHECK_NEAR(p[0], 1.0 * (1 - 0.001) - 0.01, 1e-6);
        CHECK_NEAR(p[1], -2.0 * (1 - 0.001) + 0.01, 1e-6);
        CHECK_NEAR(p[2], 0.5 * (1 - 0.001), 1e-7);
        /* a second step with the same gradient moves by lr again */
        float before = p[0];
        gr_adamw_step(o, p, g);
        CHECK_NEAR(before * (1 - 0.001) - 0.01, p[0], 1e-6);
        gr_adamw_destroy(&o);
        CHECK(o == NULL);
    }
}

/* The chain: states 0..N-1, action 0 moves left, 1 moves right. Left at state
 * 0 ends the episode with reward 1, right at state N-1 ends it with reward 10,
 * every other move gives 0. With gamma = 0.5 the optimum goes left from the
 * first few states and right from the others. */
enum { CHAIN_N = 10 };
#define CHAIN_GAMMA 0.5

static int chain_step(int s, int a, float *r, int *done)
{
    *r = 0;
    *done = 0;
    if (a == 0 && s == 0) return *r = 1, *done = 1, s;
    if (a == 1 && s == CHAIN_N - 1) return *r = 10, *done = 1, s;
    return a == 0 ? s - 1 : s + 1;
}

static void one_hot(int s, float *v)
{
    for (int i = 0; i < CHAIN_N; i++) v[i] = i == s ? 1.0f : 0.0f;
}

static void chain_optimum(double q[CHAIN_N][2])
{
    double v[CHAIN_N] = {0};
    for (int it = 0; it < 200; it++)
        for (int s = 0; s < CHAIN_N; s++) {
            for (int a = 0; a < 2; a++) {
                float r;
                int done, s2 = chain_step(s, a, &r, &done);
                q[s][a] = r + (done ? 0 : CHAIN_GAMMA * v[s2]);
            }
            v[s] = fmax(q[s][0], q[s][1]);
        }
}

static int chain_learns(uint64_t seed)
{
    double qstar[CHAIN_N][2];
    chain_optimum(qstar);
    gr_dqn_config c;
    gr_dqn_config_default(&c);
    c.shape = (gr_qnet_shape){CHAIN_N, 32, 1, 2};
    c.gamma = (float)CHAIN_GAMMA;
    c.batch = 32;
    c.replay = 2000;
    c.tau = 0.02f;
    c.eps_decay = 300;
    c.seed = seed;
    gr_dqn *d = gr_dqn_new(&c);
    CHECK(d != NULL);
    if (!d) return 0;
    gr_rng_stream rs;
    gr_rng_stream_init(&rs, seed, "test.chain.start");
    float s[CHAIN_N], s2[CHAIN_N];
    for (int ep = 0; ep < 300; ep++) {
        int st = (int)(gr_rng_next_double(&rs) * CHAIN_N);
        for (int t = 0; t < 30; t++) {
            one_hot(st, s);
            int a = gr_dqn_act(d, s);
            float r;
            int done, nx = chain_step(st, a, &r, &done);
            one_hot(nx, s2);
            CHECK(gr_dqn_remember(d, s, a, r, s2, done) == 0);
            double loss;
            CHECK(gr_dqn_train(d, &loss) >= 0);
            st = nx;
            if (done) break;
        }
    }
    int ok = 1;
    double maxerr = 0;
    float q[2];
    for (int st = 0; st < CHAIN_N; st++) {
        one_hot(st, s);
        int best = qstar[st][1] > qstar[st][0];
        int got = gr_dqn_greedy(d, s);
        CHECK(gr_qnet_forward(gr_dqn_policy(d), s, 1, q) == 0);
        maxerr = fmax(maxerr, fmax(fabs(q[0] - qstar[st][0]), fabs(q[1] - qstar[st][1])));
        if (got != best) ok = 0;
        printf("  state %d: Q* = (%.4f, %.4f) learnt (%.4f, %.4f) greedy %s, optimal %s\n", st,
               qstar[st][0], qstar[st][1], q[0], q[1], got ? "right" : "left",
               best ? "right" : "left");
    }
    printf("chain seed %llu: %s, max |Q - Q*| = %.3g, epsilon now %.3f after %llu steps\n",
           (unsigned long long)seed, ok ? "optimal" : "NOT optimal", maxerr, gr_dqn_epsilon(d),
           (unsigned long long)gr_dqn_steps(d));
    gr_dqn_destroy(&d);
    return ok;
}

static void test_dqn_learns_chain(void)
{
    /* the optimum mixes both actions (left from 0..2, right from 3..9) */
    double q[CHAIN_N][2];
    chain_optimum(q);
    CHECK(q[2][0] > q[2][1] && q[3][1] > q[3][0]);
    CHECK(chain_learns(1));
    CHECK(chain_learns(2));
}

static void test_determinism_and_schedule(void)
{
    gr_dqn_config c;
    gr_dqn_config_default(&c);
    c.shape = (gr_qnet_shape){3, 8, 2, 4};
    c.batch = 4;
    c.replay = 16;
    c.seed = 5;
    gr_dqn *a = gr_dqn_new(&c), *b = gr_dqn_new(&c);
    float s[3] = {0.1f, -0.2f, 0.3f};
    CHECK_NEAR(gr_dqn_epsilon(a), 0.9, 1e-12);
    int same = 1;
    for (int i = 0; i < 50; i++) {
        int x = gr_dqn_act(a, s), y = gr_dqn_act(b, s);
        if (x != y || x < 0 || x >= 4) same = 0;
        gr_dqn_remember(a, s, x, 0.5f, s, i % 7 == 0);
        gr_dqn_remember(b, s, y, 0.5f, s, i % 7 == 0);
        double la = 0, lb = 0;
        int ta = gr_dqn_train(a, &la), tb = gr_dqn_train(b, &lb);
        if (ta != tb || la != lb) same = 0;
        CHECK(ta == (i >= 3)); /* trains once the buffer holds a batch */
    }
    CHECK(same);
    CHECK_EQ_INT(gr_dqn_memory(a), 16); /* ring buffer capacity */
    CHECK_NEAR(gr_dqn_epsilon(a), 0.05 + 0.85 * exp(-50.0 / 1000), 1e-12);
    CHECK(gr_dqn_remember(a, s, 4, 0, s, 0) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "action 4");
    CHECK(gr_dqn_remember(a, s, 0, NAN, s, 0) == GR_EINVAL);
    gr_dqn_destroy(&a);
    gr_dqn_destroy(&b);
}

static void test_bad_config(void)
{
    gr_dqn_config c;
    gr_dqn_config_default(&c);
    CHECK(gr_dqn_config_check(&c) == 0);
    c.gamma = 1.5f;
    CHECK(gr_dqn_new(&c) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "gamma");
    gr_dqn_config_default(&c);
    c.batch = 200;
    c.replay = 100;
    CHECK(gr_dqn_config_check(&c) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "batch 200 larger than the replay buffer");
    gr_qnet_shape s = {13, 0, 9, 10};
    CHECK(gr_qnet_new(&s, 0) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "hidden = 0");
    s.hidden = 4;
    gr_qnet *q = gr_qnet_new(&s, 0);
    float in[13] = {0}, y = 0;
    int act = 10;
    double loss;
    CHECK(gr_qnet_huber_step(q, in, 1, &act, &y, 1, &loss) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "action 10");
    CHECK(gr_qnet_backward(q, in) == GR_ESTATE);
    gr_qnet_destroy(&q);
}

int main(void)
{
    RUN(test_forward_matches_reference);
    RUN(test_backprop_finite_differences);
    RUN(test_adamw_first_step);
    RUN(test_determinism_and_schedule);
    RUN(test_bad_config);
    RUN(test_dqn_learns_chain);
    TEST_MAIN_END();
}
