/* Tests for streamed model weights (gr_model_load_opts, GR_MODEL_STREAM): a
 * random llama checkpoint in bf16 whose fp32 weights (266 MB) are far above
 * the budget it is loaded with must run a forward pass while the process's
 * anonymous memory (RssAnon: the mapped file is not counted) stays well below
 * that size, giving bit-identical log-probs and logits to the same model held
 * resident, whose anonymous memory does exceed it (so the measurement can
 * fail); the lm_head is multiplied a vocabulary chunk at a time (32000 rows:
 * eight chunks). Missing tensors, wrong shapes and wrong dtypes get the same
 * one-line errors at load in both modes. The golden fixtures run streamed in
 * test_forward. */
#include "gr_err.h"
#include "gr_forward.h"
#include "gr_model.h"
#include "gr_st.h"
#include "gr_test.h"
#include "th_llama.h"
#include "th_rss.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef th_llama_dims dims;

/* How write_llama spoils one tensor (name NULL: none). */
typedef struct spoil {
    const char *name;
    enum { SP_OMIT, SP_SHAPE, SP_DTYPE } how;
} spoil;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Writes config.json and a bf16 model.safetensors of a random llama into
 * dir (uniform weights of standard deviation 0.02, norms 1). */
static int write_llama(const char *dir, const dims *d, spoil sp)
{
    th_tensor_spec *s = calloc(TH_LLAMA_NSPECS(d->layers), sizeof *s);
    if (!s) return GR_ENOMEM;
    const size_t n = th_llama_specs(d, s);
    gr_stw *w = gr_stw_new(dir, 0);
    enum { CHUNK = 1 << 20 };
    float *buf = malloc(CHUNK * sizeof *buf);
    int rc = !w || !buf ? GR_ENOMEM : 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const int bad = sp.name && !strcmp(sp.name, s[i].name);
        if (bad && sp.how == SP_OMIT) continue;
        if (bad && sp.how == SP_SHAPE) s[i].rows += 1;
        int64_t shape[2] = {s[i].rows, s[i].cols};
        rc = gr_stw_add(w, s[i].name, bad && sp.how == SP_DTYPE ? GR_DT_I16 : GR_DT_BF16,
                        s[i].cols ? 2 : 1, shape);
    }
    if (!rc) rc = gr_stw_begin(w);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; !rc && i < n; i++) {
        const int bad = sp.name && !strcmp(sp.name, s[i].name);
        if (bad && sp.how == SP_OMIT) continue;
        const size_t cnt = (size_t)(s[i].rows * (s[i].cols ? s[i].cols : 1));
        for (size_t e0 = 0; !rc && e0 < cnt; e0 += CHUNK) {
            const size_t k = cnt - e0 < CHUNK ? cnt - e0 : CHUNK;
            for (size_t e = 0; e < k; e++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
                buf[e] =
                    s[i].cols
                        ? (float)(((double)(x >> 11) / 9007199254740992.0 - 0.5) * 3.4641016 * 0.02)
                        : 1.0f;
            }
            if (bad && sp.how == SP_DTYPE) {
                rc = gr_stw_write(w, buf, k * 2); /* I16: 2 bytes each, any bits */
            } else {
                rc = gr_stw_write_f32(w, buf, k);
            }
        }
    }
    if (!rc) rc = gr_stw_finish(w);
    gr_stw_destroy(&w);
    free(buf);
    free(s);
    if (rc) return rc;
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) return GR_EIO;
    fprintf(f,
            "{\"model_type\": \"llama\", \"vocab_size\": %d, \"hidden_size\": %d, "
            "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
            "\"num_key_value_heads\": %d, \"head_dim\": %d, \"max_position_embeddings\": 512, "
            "\"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": false}\n",
            d->vocab, d->hidden, d->inter, d->layers, d->heads, d->kv_heads, d->head_dim);
    return fclose(f) ? GR_EIO : 0;
}

static void rm_dir(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
}

/* Loads dir in `mode` under `budget` bytes, runs one forward pass (logits
 * and log-probs of B sequences of T tokens, 2 threads) and returns the peak
 * RssAnon above the level before the load, in MB (-1 on failure). */
static double measure(const char *dir, gr_model_mode mode, uint64_t budget, const int32_t *tok,
                      int B, int T, float *logits, double *logp, int *streamed, double *secs)
{
    th_peak pk;
    if (th_peak_start(&pk)) return -1;
    const double t0 = now_s();
    const gr_model_opts o = {.mode = mode, .max_fp32_bytes = budget};
    gr_model *m = gr_model_load_opts(dir, &o);
    gr_fwd *f = m ? gr_fwd_new(m, B * T, 2) : NULL;
    int rc = f ? gr_fwd_run(f, tok, B, T, 0, logits, logp) : -1;
    if (rc) fprintf(stderr, "%s: %s\n", dir, gr_errmsg());
    *secs = now_s() - t0;
    *streamed = m ? gr_model_streaming(m) : -1;
    double mb = th_peak_stop(&pk);
    gr_fwd_destroy(&f);
    gr_model_destroy(&m);
    return rc ? -1 : mb;
}

static void test_memory(void)
{
    /* large blocks straight from and back to the kernel, so that memory freed
     * by one measurement is not reused unseen by the next (glibc otherwise
     * raises its mmap threshold after the first large free) */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    char dir[] = "/tmp/graft-fwd-stream-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    /* 66.6M parameters: 266 MB in fp32, 133 MB of bf16 on disk */
    const dims d = {.vocab = 32000,
                    .hidden = 512,
                    .inter = 1408,
                    .layers = 12,
                    .heads = 8,
                    .kv_heads = 2,
                    .head_dim = 64};
    double t0 = now_s();
    CHECK(write_llama(dir, &d, (spoil){NULL, SP_OMIT}) == 0);
    printf("wrote a random bf16 llama in %.2f s\n", now_s() - t0);
    const int B = 2, T = 64, V = d.vocab;
    int32_t tok[2 * 64];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)((i * 7919u + 13u) % (unsigned)V);
    float *lg[2] = {malloc(sizeof(float) * B * T * V), malloc(sizeof(float) * B * T * V)};
    /* touched now, so that the outputs are not counted as the model's memory */
    for (int k = 0; k < 2; k++)
        if (lg[k]) memset(lg[k], 0, sizeof(float) * B * T * V);
    double lp[2][2 * 63];
    int streamed[2];
    double secs[2];
    const uint64_t budget = 64ull << 20; /* a quarter of the fp32 size */
    /* streamed first: the resident arena, once freed, cannot linger in the
     * allocator (or ASan's quarantine) and hide in the baseline */
    const double mb_s =
        measure(dir, GR_MODEL_AUTO, budget, tok, B, T, lg[1], lp[1], &streamed[1], &secs[1]);
    const double mb_r =
        measure(dir, GR_MODEL_AUTO, 1ull << 40, tok, B, T, lg[0], lp[0], &streamed[0], &secs[0]);
    const double Q = (double)d.heads * d.head_dim, KV = (double)d.kv_heads * d.head_dim;
    const double per_layer =
        2.0 * d.hidden + (Q + 2 * KV) * d.hidden + d.hidden * Q + 3.0 * d.inter * d.hidden;
    const double fp32_mb =
        4.0 * (2.0 * d.vocab * d.hidden + d.layers * per_layer + d.hidden) / (1 << 20);
    printf("fp32 weights %.0f MB; budget 64 MB: streamed %d, peak RssAnon +%.1f MB, %.2f s; "
           "budget 1 TB: streamed %d, peak RssAnon +%.1f MB, %.2f s\n",
           fp32_mb, streamed[1], mb_s, secs[1], streamed[0], mb_r, secs[0]);
    CHECK(streamed[1] == 1 && streamed[0] == 0);
    CHECK_MSG(mb_s >= 0 && mb_s < fp32_mb / 4, "streamed: RssAnon grew by %.1f MB", mb_s);
    CHECK_MSG(mb_r > 0.9 * fp32_mb, "resident: RssAnon grew by only %.1f MB", mb_r);
    const int same =
        !memcmp(lp[0], lp[1], sizeof lp[0]) && !memcmp(lg[0], lg[1], sizeof(float) * B * T * V);
    double mean = 0;
    for (int i = 0; i < B * (T - 1); i++) mean -= lp[0][i] / (B * (T - 1));
    printf("mean NLL %.6f (uniform would be %.6f); streamed %s resident\n", mean, log((double)V),
           same ? "bit-identical to" : "DIFFERS from");
    CHECK(isfinite(mean) && fabs(mean - log((double)V)) < 1.0);
    CHECK(same);
    free(lg[0]);
    free(lg[1]);
    rm_dir(dir);
}

/* Bad checkpoints fail at load with the same one-line error in both modes,
 * before any forward pass. */
static void test_load_errors(void)
{
    const dims d = {.vocab = 300,
                    .hidden = 64,
                    .inter = 96,
                    .layers = 2,
                    .heads = 4,
                    .kv_heads = 2,
                    .head_dim = 16};
    static const struct {
        spoil sp;
        int code;
        const char *msg;
    } bad[] = {
        {{"model.layers.1.mlp.up_proj.weight", SP_OMIT},
         GR_ENOTFOUND,
         "missing tensor 'model.layers.1.mlp.up_proj.weight'"},
        {{"lm_head.weight", SP_OMIT}, GR_ENOTFOUND, "missing tensor 'lm_head.weight'"},
        {{"model.layers.1.self_attn.k_proj.weight", SP_SHAPE},
         GR_EFORMAT,
         "tensor 'model.layers.1.self_attn.k_proj.weight' has shape [33, 64], config.json implies "
         "[32, 64]"},
        {{"model.norm.weight", SP_SHAPE},
         GR_EFORMAT,
         "tensor 'model.norm.weight' has shape [65], config.json implies [64]"},
        {{"model.layers.0.mlp.down_proj.weight", SP_DTYPE},
         GR_EFORMAT,
         "tensor 'model.layers.0.mlp.down_proj.weight' has dtype I16; weights must be F32, F16, "
         "BF16 or F64"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char dir[] = "/tmp/graft-fwd-bad-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        CHECK(write_llama(dir, &d, bad[i].sp) == 0);
        for (int k = 0; k < 3; k++) {
            const gr_model_opts o = {.mode = k == 0   ? GR_MODEL_RESIDENT
                                             : k == 1 ? GR_MODEL_STREAM
                                                      : GR_MODEL_AUTO,
                                     .max_fp32_bytes = 1024};
            gr_model *m = gr_model_load_opts(dir, &o);
            CHECK_MSG(m == NULL && gr_errcode() == bad[i].code, "case %zu mode %d: code %d", i, k,
                      gr_errcode());
            CHECK_CONTAINS(gr_errmsg(), bad[i].msg);
            CHECK_MSG(!strchr(gr_errmsg(), '\n'), "case %zu: not one line", i);
            gr_model_destroy(&m);
        }
        rm_dir(dir);
    }
    /* the unspoiled model loads in both modes, and AUTO streams it under a
     * budget below its fp32 size (the tail of the last case's budget) */
    char dir[] = "/tmp/graft-fwd-ok-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK(write_llama(dir, &d, (spoil){NULL, SP_OMIT}) == 0);
    const gr_model_opts small = {.max_fp32_bytes = 1024}, large = {.max_fp32_bytes = 1ull << 30};
    gr_model *a = gr_model_load_opts(dir, &small), *b = gr_model_load_opts(dir, &large);
    CHECK(a && b && gr_model_streaming(a) && !gr_model_streaming(b));
    if (a && b && gr_model_streaming(a) && !gr_model_streaming(b)) {
        CHECK(gr_model_nparams(a) == gr_model_nparams(b));
        /* streamed weights come from gr_model_layer, not gr_model_weights */
        CHECK(gr_model_weights(a)->layer == NULL && gr_model_weights(a)->norm_w != NULL);
        gr_layer_w la, lb;
        float *buf = malloc(gr_model_layer_floats(a) * sizeof(float));
        const int ok = buf && gr_model_layer(a, 1, buf, 2, &la) == 0 &&
                       gr_model_layer(b, 1, NULL, 1, &lb) == 0;
        CHECK(ok);
        CHECK(ok && !memcmp(la.wup, lb.wup, sizeof(float) * 2 * 96 * 64));
        CHECK(ok && la.wqkv != lb.wqkv && la.wqkv >= buf); /* converted into buf */
        CHECK(gr_model_layer(a, 2, buf, 1, &la) == GR_EINVAL);
        float row[64];
        CHECK(gr_model_embed_row(a, 300, row) == GR_EINVAL);
        CHECK(gr_model_pos_row(a, 0, row) == GR_EINVAL); /* llama has no learned positions */
        free(buf);
    }
    gr_model_destroy(&a);
    gr_model_destroy(&b);
    rm_dir(dir);
}

int main(void)
{
    /* these tests choose the modes themselves (AUTO under a budget included),
     * so a run-wide GRAFT_MODEL_STREAM=1 must not override that choice */
    unsetenv("GRAFT_MODEL_STREAM");
    RUN(test_load_errors);
    RUN(test_memory);
    TEST_MAIN_END();
}
