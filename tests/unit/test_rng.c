/* Tests for gr_rng: Philox4x32-10 known-answer vectors (Random123) and
 * uniformity. */
#include "gr_rng.h"
#include "gr_test.h"

static void test_kat(void)
{
    uint32_t w[4];
    gr_rng_philox(0, 0, w);
    CHECK(w[0] == 0x6627e8d5u && w[1] == 0xe169c58du && w[2] == 0xbc57ac4cu && w[3] == 0x9b00dbd8u);
}

static void test_uniform(void)
{
    uint64_t key = gr_rng_key(42, "model.layers.0.mlp.up_proj.weight", 1);
    double sum = 0, sum2 = 0;
    const int n = 200000;
    float chunk[7];
    for (int i = 0; i < n; i++) {
        float u = gr_rng_uniform(key, (uint64_t)i);
        CHECK_MSG(u >= 0 && u < 1, "u=%g", u);
        sum += u;
        sum2 += (double)u * u;
        if (i % 7 == 0 && i + 7 <= n) {
            gr_rng_fill_uniform(key, (uint64_t)i, chunk, 7);
            for (int k = 0; k < 7; k++)
                if (chunk[k] != gr_rng_uniform(key, (uint64_t)(i + k))) {
                    CHECK(0);
                    return;
                }
        }
    }
    double mean = sum / n, var = sum2 / n - mean * mean;
    CHECK_NEAR(mean, 0.5, 4 * sqrt(1.0 / 12 / n));
    CHECK_NEAR(var, 1.0 / 12, 0.002);
    CHECK(gr_rng_key(42, "a", 0) != gr_rng_key(42, "b", 0));
    CHECK(gr_rng_key(42, "a", 0) != gr_rng_key(43, "a", 0));
    CHECK(gr_rng_key(42, "a", 0) != gr_rng_key(42, "a", 1));
}

static void test_stream(void)
{
    gr_rng_stream s;
    gr_rng_stream_init(&s, 7, "nbody");
    double m = 0, v = 0;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        double z = gr_rng_next_normal(&s);
        m += z;
        v += z * z;
    }
    m /= n;
    v = v / n - m * m;
    CHECK_NEAR(m, 0, 0.02);
    CHECK_NEAR(v, 1, 0.02);
}

int main(void)
{
    RUN(test_kat);
    RUN(test_uniform);
    RUN(test_stream);
    TEST_MAIN_END();
}
