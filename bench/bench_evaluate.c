/* bench_evaluate: tokens/s of the perplexity forward pass (gr_forward) on a
 * random llama-shaped model of about 100M parameters, against the same
 * forward pass written plainly in PyTorch (bench/evaluate_torch.py, fp32,
 * same thread count, same checkpoint and windows) in the same run, and
 * against the machine limit (OpenBLAS sgemm GFLOP/s measured here).
 *
 *   bench_evaluate [--threads N] [--seq-len T] [--batch B] [--windows W]
 *                  [--rounds R] [--no-torch] [--keep DIR]
 *
 * Defaults: 2 threads, T 512, B 1, W 4 timed batches after one warm-up, R 2
 * alternating rounds of graft and torch (the best of each is reported, so
 * load from other processes hurts both alike). The model (hidden 768, 12
 * layers, 12 heads, 4 KV heads, MLP 2048, vocab 16000: 100.1M parameters) is
 * written as an ordinary transformers checkpoint and read back through
 * gr_model_load, like any evaluated model. A last part measures the same
 * windows with the weights streamed (GR_MODEL_STREAM: converted a layer at a
 * time from the mapped file) against resident, alternating R rounds: tokens/s
 * of each, and the peak anonymous memory (RssAnon, sampled every ms from
 * /proc/self/status; the mapped file is not counted) of load + run. */
#include "gr_err.h"
#include "gr_forward.h"
#include "gr_model.h"
#include "gr_rng.h"
#include "gr_st.h"
#include "../tests/unit/th_llama.h"
#include "../tests/unit/th_rss.h"

#include <cblas.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VOCAB   16000
#define HIDDEN  768
#define INTER   2048
#define LAYERS  12
#define HEADS   12
#define KVHEADS 4
#define HDIM    64
#define MAXPOS  2048
#define WSCALE  0.02 /* standard deviation of the random weights */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Writes config.json and model.safetensors of the random model into dir. */
static int write_model(const char *dir)
{
    static th_tensor_spec s[TH_LLAMA_NSPECS(LAYERS)];
    const th_llama_dims d = {VOCAB, HIDDEN, INTER, LAYERS, HEADS, KVHEADS, HDIM};
    const size_t n = th_llama_specs(&d, s);
    gr_stw *w = gr_stw_new(dir, 0);
    float *buf = malloc((size_t)VOCAB * HIDDEN * sizeof *buf);
    int rc = !w || !buf ? gr_errcode() ? gr_errcode() : GR_ENOMEM : 0;
    for (size_t i = 0; !rc && i < n; i++) {
        int64_t shape[2] = {s[i].rows, s[i].cols};
        rc = gr_stw_add(w, s[i].name, GR_DT_F32, s[i].cols ? 2 : 1, shape);
    }
    if (!rc) rc = gr_stw_begin(w);
    for (size_t i = 0; !rc && i < n; i++) {
        const size_t cnt = (size_t)(s[i].rows * (s[i].cols ? s[i].cols : 1));
        const uint64_t key = gr_rng_key(1, s[i].name, 0);
        for (size_t e = 0; e < cnt; e++) /* uniform with standard deviation WSCALE */
            buf[e] =
                s[i].cols ? (float)((gr_rng_uniform(key, e) - 0.5) * sqrt(12.0) * WSCALE) : 1.0f;
        rc = gr_stw_write_f32(w, buf, cnt);
    }
    if (!rc) rc = gr_stw_finish(w);
    gr_stw_destroy(&w);
    free(buf);
    if (rc) return rc;
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) return gr_seterr(GR_EIO, "%s: cannot create", p);
    fprintf(f,
            "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
            "\"vocab_size\": %d, \"hidden_size\": %d, \"intermediate_size\": %d, "
            "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
            "\"head_dim\": %d, \"max_position_embeddings\": %d, \"rms_norm_eps\": 1e-05, "
            "\"rope_theta\": 10000.0, \"tie_word_embeddings\": false, \"hidden_act\": \"silu\", "
            "\"torch_dtype\": \"float32\"}\n",
            VOCAB, HIDDEN, INTER, LAYERS, HEADS, KVHEADS, HDIM, MAXPOS);
    return fclose(f) ? gr_seterr(GR_EIO, "%s: write failed", p) : 0;
}

/* OpenBLAS sgemm GFLOP/s on n^3 (best of 8): the machine limit for the
 * matrix products that make up most of the forward pass. */
static double sgemm_peak(int n, int threads)
{
    openblas_set_num_threads(threads);
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n);
    float *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 0;
    for (int r = 0; r < 8; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double g = 2.0 * n * n * n / (now() - t0) / 1e9;
        best = g > best ? g : best;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

typedef struct run {
    double tok_s, nll, secs, cpu; /* cpu: CPU seconds of all the process's threads */
} run;

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int run_graft(const gr_model *m, const int32_t *ids, int T, int B, int W, int threads,
                     run *out)
{
    gr_fwd *f = gr_fwd_new(m, B * T, threads);
    double *lp = malloc(sizeof(double) * B * (T - 1));
    if (!f || !lp) {
        gr_fwd_destroy(&f);
        free(lp);
        return GR_ENOMEM;
    }
    int rc = gr_fwd_run(f, ids, B, T, 0, NULL, lp); /* warm-up */
    double nll = 0, t0 = now(), c0 = cpu_now();
    for (int k = 1; !rc && k <= W; k++) {
        rc = gr_fwd_run(f, ids + (size_t)k * B * T, B, T, 0, NULL, lp);
        for (int i = 0; i < B * (T - 1); i++) nll -= lp[i];
    }
    out->secs = now() - t0;
    out->cpu = cpu_now() - c0;
    out->tok_s = (double)W * B * (T - 1) / out->secs;
    out->nll = nll / ((double)W * B * (T - 1));
    gr_fwd_destroy(&f);
    free(lp);
    return rc;
}

/* Loads dir in `mode`, runs the windows, and reports the peak RssAnon above
 * the level before the load (MB) in *mb. */
static int run_mode(const char *dir, gr_model_mode mode, const int32_t *ids, int T, int B, int W,
                    int threads, run *out, double *mb)
{
    th_peak pk;
    if (th_peak_start(&pk)) return GR_ENOMEM;
    const gr_model_opts o = {.mode = mode};
    gr_model *m = gr_model_load_opts(dir, &o);
    int rc = m ? run_graft(m, ids, T, B, W, threads, out) : gr_errcode();
    *mb = th_peak_stop(&pk);
    gr_model_destroy(&m);
    return rc;
}

static int run_torch(const char *dir, const char *tok, int T, int B, int W, int threads, run *out)
{
    char cmd[9000], line[1024] = "";
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/bench/evaluate_torch.py '%s' '%s' %d %d %d %d",
             GRAFT_SOURCE_DIR, dir, tok, T, B, W, threads);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(line, 1, sizeof line - 1, p);
    line[n] = 0;
    int st = pclose(p);
    const char *a = strstr(line, "\"tokens_per_s\":"), *b = strstr(line, "\"mean_nll\":"),
               *c = strstr(line, "\"seconds\":"), *d = strstr(line, "\"cpu_seconds\":");
    if (st || !a || !b || !c || !d) {
        fprintf(stderr, "torch peer failed (exit %d): %s\n", st, line);
        return -1;
    }
    out->tok_s = atof(a + 15);
    out->nll = atof(b + 11);
    out->secs = atof(c + 10);
    out->cpu = atof(d + 14);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = 2, T = 512, B = 1, W = 4, rounds = 2, torch = 1;
    const char *keep = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq-len") && i + 1 < argc)
            T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--windows") && i + 1 < argc)
            W = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch"))
            torch = 0;
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc)
            keep = argv[++i];
        else {
            fprintf(stderr, "usage: bench_evaluate [--threads N] [--seq-len T] [--batch B] "
                            "[--windows W] [--rounds R] [--no-torch] [--keep DIR]\n");
            return 2;
        }
    }
    /* large blocks straight from and back to the kernel, so that memory freed
     * by one measurement is not reused unseen by the next (glibc otherwise
     * raises its mmap threshold after the first large free) */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    if (threads < 1 || T < 2 || T > MAXPOS || B < 1 || W < 1 || rounds < 1) {
        fprintf(stderr, "bench_evaluate: bad arguments\n");
        return 2;
    }
    char tmpl[] = "/tmp/graft-bench-eval-XXXXXX", dir[4096], tok[4200];
    if (keep)
        snprintf(dir, sizeof dir, "%s", keep);
    else if (!mkdtemp(tmpl))
        return 1;
    else
        snprintf(dir, sizeof dir, "%s", tmpl);
    snprintf(tok, sizeof tok, "%s/tokens.bin", dir);
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    double t0 = now();
    if (access(cfg, R_OK)) {
        if (write_model(dir)) {
            fprintf(stderr, "bench_evaluate: %s\n", gr_errmsg());
            return 1;
        }
        printf("wrote the random model to %s in %.1f s\n", dir, now() - t0);
    }
    /* random windows: (W + 1) batches (the first warms up) */
    const size_t ntok = (size_t)(W + 1) * B * T;
    int32_t *ids = malloc(ntok * sizeof *ids);
    FILE *f = fopen(tok, "wb");
    const uint64_t key = gr_rng_key(2, "bench_evaluate tokens", 0);
    for (size_t i = 0; i < ntok; i++) {
        ids[i] = (int32_t)(gr_rng_uniform(key, i) * VOCAB);
        unsigned char le[2] = {(unsigned char)(ids[i] & 255), (unsigned char)(ids[i] >> 8)};
        fwrite(le, 1, 2, f);
    }
    fclose(f);
    t0 = now();
    gr_model *m = gr_model_load(dir);
    if (!m) {
        fprintf(stderr, "bench_evaluate: %s\n", gr_errmsg());
        return 1;
    }
    const uint64_t nparams = gr_model_nparams(m);
    printf("model: llama, hidden %d, %d layers, %d heads (%d KV), MLP %d, vocab %d: %.1fM "
           "parameters, loaded in %.2f s\n",
           HIDDEN, LAYERS, HEADS, KVHEADS, INTER, VOCAB, (double)gr_model_nparams(m) / 1e6,
           now() - t0);
    printf("windows: %d batches of %d x %d tokens after one warm-up, %d threads, %d rounds\n", W, B,
           T, threads, rounds);

    run g = {0}, t = {0}, best_g = {0}, best_t = {0};
    double cpu_g = INFINITY, cpu_t = INFINITY; /* least CPU time per side */
    int have_torch = torch;
    for (int r = 0; r < rounds; r++) {
        if (run_graft(m, ids, T, B, W, threads, &g)) {
            fprintf(stderr, "bench_evaluate: %s\n", gr_errmsg());
            return 1;
        }
        printf("round %d: graft %.1f tokens/s (%.2f s, %.2f CPU s)", r + 1, g.tok_s, g.secs, g.cpu);
        if (g.tok_s > best_g.tok_s) best_g = g;
        cpu_g = g.cpu < cpu_g ? g.cpu : cpu_g;
        if (have_torch && run_torch(dir, tok, T, B, W, threads, &t) == 0) {
            printf(", torch %.1f tokens/s (%.2f s, %.2f CPU s)", t.tok_s, t.secs, t.cpu);
            if (t.tok_s > best_t.tok_s) best_t = t;
            cpu_t = t.cpu < cpu_t ? t.cpu : cpu_t;
        } else {
            have_torch = 0;
        }
        printf("\n");
    }
    /* useful FLOPs per window: every matrix product plus causal attention */
    const double lin = (double)LAYERS * (2.0 * HIDDEN * (HEADS + 2 * KVHEADS) * HDIM +
                                         2.0 * HEADS * HDIM * HIDDEN + 6.0 * HIDDEN * INTER);
    const double att = (double)LAYERS * 2.0 * 2.0 * HEADS * HDIM * T * (T + 1) / 2.0;
    const double flop_tok = (lin * T + att + 2.0 * HIDDEN * VOCAB * (T - 1)) / (T - 1);
    const double peak = sgemm_peak(1536, threads);
    printf("graft: %.1f tokens/s, mean NLL %.6f, %.1f GFLOP/s = %.0f%% of sgemm peak %.1f GFLOP/s "
           "(1536^3, %d threads)\n",
           best_g.tok_s, best_g.nll, best_g.tok_s * flop_tok / 1e9,
           100 * best_g.tok_s * flop_tok / 1e9 / peak, peak, threads);
    int rc = 0;
    if (have_torch) {
        printf("torch: %.1f tokens/s, mean NLL %.6f (|difference| %.2g)\n", best_t.tok_s,
               best_t.nll, fabs(best_t.nll - best_g.nll));
        printf("ratio graft/torch: %.2f in tokens/s; %.2f in tokens per CPU second\n",
               best_g.tok_s / best_t.tok_s, cpu_t / cpu_g);
        if (fabs(best_t.nll - best_g.nll) > 1e-3) {
            fprintf(stderr, "bench_evaluate: graft and torch disagree on the NLL\n");
            rc = 1;
        }
    } else {
        printf("torch: not measured (needs /usr/bin/python3 with torch: apt-get install "
               "python3-torch)\n");
    }
    gr_model_destroy(&m);

    /* streamed against resident weights, alternating, best of each */
    run rs = {0}, ss = {0};
    double mb_r = 0, mb_s = 0;
    for (int r = 0; r < rounds && !rc; r++) {
        run a, b;
        double ma, mb;
        if (run_mode(dir, GR_MODEL_RESIDENT, ids, T, B, W, threads, &a, &ma) ||
            run_mode(dir, GR_MODEL_STREAM, ids, T, B, W, threads, &b, &mb)) {
            fprintf(stderr, "bench_evaluate: %s\n", gr_errmsg());
            rc = 1;
            break;
        }
        if (a.tok_s > rs.tok_s) rs = a;
        if (b.tok_s > ss.tok_s) ss = b;
        mb_r = ma > mb_r ? ma : mb_r;
        mb_s = mb > mb_s ? mb : mb_s;
    }
    if (!rc) {
        printf("streamed weights: %.1f tokens/s against %.1f resident (ratio %.3f, mean NLL "
               "%s); peak RssAnon of load + run: resident %.0f MB, streamed %.0f MB (fp32 "
               "weights %.0f MB)\n",
               ss.tok_s, rs.tok_s, ss.tok_s / rs.tok_s, ss.nll == rs.nll ? "identical" : "DIFFERS",
               mb_r, mb_s, 4.0 * (double)nparams / (1 << 20));
        if (ss.nll != rs.nll) {
            fprintf(stderr, "bench_evaluate: streamed and resident weights disagree on the NLL\n");
            rc = 1;
        }
    }
    free(ids);
    if (!keep) {
        char cmd[4300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd)) fprintf(stderr, "bench_evaluate: could not remove %s\n", dir);
    }
    return rc;
}
