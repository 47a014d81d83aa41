/* bench_merge: TIES of three fine-tunes of a synthetic bf16 llama-shaped
 * checkpoint (about 1B parameters by default), by graft's merge op and by the
 * same merge written plainly in PyTorch (bench/merge_torch.py), on the same
 * files in the same run, against the machine's memory bandwidth.
 *
 *   bench_merge [--params N] [--dir DIR] [--threads T] [--density D]
 *               [--no-torch] [--keep]
 *
 *   --params N   parameters per model (default 1e9: TinyLlama's shape with
 *                as many layers as fit; ~2 GB per model, 4 models + 2 outputs)
 *   --dir DIR    where the checkpoints go (default $TMPDIR or /tmp); removed
 *                at the end unless --keep
 *   --threads T  threads for graft and for torch (default: online CPUs)
 *
 * Each merge runs in a child process; its peak RSS is getrusage's ru_maxrss
 * of that child. Memory bandwidth is a STREAM-style triad (c = a + s·b over
 * 3 × 256 MiB) with the same threads, best of 5. graft's GB/s counts the
 * bytes it must move at least: the four input checkpoints read and the
 * output written. The outputs of graft and torch are compared element-wise
 * (bf16 bits): with continuous random data the two differ only where the
 * magnitude cut meets ties, or by the last bit of rounding. */
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_json.h"
#include "gr_op.h"
#include "gr_rng.h"
#include "gr_sparse.h"
#include "gr_st.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define GEN_CHUNK   ((uint64_t)1 << 24) /* elements generated per step */
#define TRIAD_ELEMS ((size_t)64 << 20)  /* 3 arrays of 256 MiB */
#define NMODELS     3

static const double WEIGHTS[NMODELS] = {1.0, 0.7, 0.5};

typedef struct tdesc {
    char name[96];
    int ndim;
    int64_t shape[2];
} tdesc;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A llama-shaped tensor list of about `params` parameters. */
static size_t layout(double params, tdesc **out, uint64_t *total)
{
    int64_t h = 2048, inter = 5632, vocab = 32000, kv = 256;
    if (params < 4e8) h = 512, inter = 1408, vocab = 8000, kv = 128;
    double per_layer = (double)(2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h);
    long layers = lround((params - 2.0 * (double)(vocab * h) - (double)h) / per_layer);
    if (layers < 1) layers = 1;
    tdesc *t = calloc((size_t)layers * 9 + 3, sizeof *t);
    size_t n = 0;
    uint64_t tot = 0;
#define ADD(nm, a, b)                                                                              \
    do {                                                                                           \
        snprintf(t[n].name, sizeof t[n].name, "%s", nm);                                           \
        t[n].ndim = (b) ? 2 : 1;                                                                   \
        t[n].shape[0] = (a);                                                                       \
        t[n].shape[1] = (b);                                                                       \
        tot += (uint64_t)(a) * (uint64_t)((b) ? (b) : 1);                                          \
        n++;                                                                                       \
    } while (0)
    ADD("model.embed_tokens.weight", vocab, h);
    for (long l = 0; l < layers; l++) {
        char nm[96];
        static const char *const parts[] = {
            "self_attn.q_proj.weight",        "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",        "self_attn.o_proj.weight",
            "mlp.gate_proj.weight",           "mlp.up_proj.weight",
            "mlp.down_proj.weight",           "input_layernorm.weight",
            "post_attention_layernorm.weight"};
        int64_t dims[9][2] = {{h, h},     {kv, h},    {kv, h}, {h, h}, {inter, h},
                              {inter, h}, {h, inter}, {h, 0},  {h, 0}};
        for (int p = 0; p < 9; p++) {
            snprintf(nm, sizeof nm, "model.layers.%ld.%s", l, parts[p]);
            ADD(nm, dims[p][0], dims[p][1]);
        }
    }
    ADD("model.norm.weight", h, 0);
    ADD("lm_head.weight", vocab, h);
#undef ADD
    *out = t;
    *total = tot;
    return n;
}

/* Writes model m (0 = base; others = base + small noise) as bf16. */
static int generate(const char *dir, const tdesc *t, size_t n, int m)
{
    gr_stw *w = gr_stw_new(dir, 0);
    float *buf = malloc(GEN_CHUNK * sizeof *buf);
    int rc = w && buf ? 0 : -1;
    for (size_t i = 0; !rc && i < n; i++)
        rc = gr_stw_add(w, t[i].name, GR_DT_BF16, t[i].ndim, t[i].shape);
    if (!rc) rc = gr_stw_begin(w);
    for (size_t i = 0; !rc && i < n; i++) {
        uint64_t ne = (uint64_t)t[i].shape[0] * (uint64_t)(t[i].ndim == 2 ? t[i].shape[1] : 1);
        uint64_t kb = gr_rng_key(1, t[i].name, 0), km = gr_rng_key(2, t[i].name, (uint64_t)m);
        for (uint64_t off = 0; !rc && off < ne; off += GEN_CHUNK) {
            uint64_t c = ne - off < GEN_CHUNK ? ne - off : GEN_CHUNK;
#pragma omp parallel for schedule(static)
            for (uint64_t j = 0; j < c; j++) {
                float v = (gr_rng_uniform(kb, off + j) - 0.5f) * 0.04f;
                if (m) v += (gr_rng_uniform(km, off + j) - 0.5f) * 0.004f;
                buf[j] = v;
            }
            rc = gr_stw_write_f32(w, buf, (size_t)c);
        }
    }
    if (!rc) rc = gr_stw_finish(w);
    if (rc) fprintf(stderr, "bench_merge: writing %s: %s\n", dir, gr_errmsg());
    gr_stw_destroy(&w);
    free(buf);
    if (!rc) { /* a config so the merge copies something, as for a real model */
        char *p = gr_fs_join(dir, "config.json");
        const char *cfg = "{\"model_type\": \"llama\"}";
        rc = gr_fs_write_atomic(p, cfg, strlen(cfg), 0644);
        free(p);
    }
    return rc;
}

/* STREAM triad with the current OpenMP threads: best GB/s of 5. */
static double triad_gbs(void)
{
    float *a = malloc(TRIAD_ELEMS * 4), *b = malloc(TRIAD_ELEMS * 4), *c = malloc(TRIAD_ELEMS * 4);
    if (!a || !b || !c) return 0;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < TRIAD_ELEMS; i++) a[i] = 1.0f, b[i] = 2.0f, c[i] = 0.0f;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < TRIAD_ELEMS; i++) c[i] = a[i] + 0.5f * b[i];
        double dt = now() - t0, gbs = 3.0 * 4 * (double)TRIAD_ELEMS / dt / 1e9;
        if (gbs > best) best = gbs;
        a[r] += c[TRIAD_ELEMS - 1 - (size_t)r]; /* keep the loop alive */
    }
    free(a), free(b), free(c);
    return best;
}

typedef struct child_result {
    int status;
    double seconds;
    long maxrss_kb;
} child_result;

static int wait_child(pid_t pid, double t0, child_result *r)
{
    struct rusage ru;
    int st;
    while (wait4(pid, &st, 0, &ru) < 0)
        if (errno != EINTR) return -1;
    r->seconds = now() - t0;
    r->maxrss_kb = ru.ru_maxrss;
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return 0;
}

/* The child that merges: a fresh process image (OpenMP's thread pool does
 * not survive fork), so its ru_maxrss is the merge's own. */
static int child_merge(const char *params, const char *out, int threads)
{
    gr_json *p = gr_json_parse(params, strlen(params), "params");
    const gr_op *op = gr_op_find("merge");
    if (!p || !op || gr_op_check_params(op, p) || gr_fs_mkdirs(out, 0755, 0)) {
        fprintf(stderr, "bench_merge: child: %s\n", gr_errmsg());
        return 3;
    }
    gr_op_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.op = op;
    ctx.params = p;
    ctx.outdir = out;
    ctx.threads = threads;
    int rc = op->run(&ctx);
    if (rc) fprintf(stderr, "bench_merge: graft merge: %s\n", gr_errmsg());
    gr_buf_free(&ctx.metrics);
    gr_json_free(p);
    return rc ? 1 : 0;
}

static int run_child(char *const argv[], child_result *r)
{
    double t0 = now();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    return wait_child(pid, t0, r);
}

/* Element-wise comparison of two bf16 checkpoints. */
static void compare(const char *a, const char *b, uint64_t *n, uint64_t *same, uint64_t *far)
{
    *n = *same = *far = 0;
    gr_sparse *x = gr_sparse_open(a), *y = gr_sparse_open(b);
    if (!x || !y) {
        fprintf(stderr, "bench_merge: compare: %s\n", gr_errmsg());
        goto out;
    }
    for (size_t i = 0; i < gr_sparse_count(x); i++) {
        const gr_sparse_tensor *tx = gr_sparse_at(x, i), *ty = gr_sparse_find(y, tx->name);
        if (!ty || ty->nelem != tx->nelem) continue;
        const gr_tensor *rx = gr_sparse_dense(x, tx), *ry = gr_sparse_dense(y, ty);
        if (!rx || !ry || rx->dtype != GR_DT_BF16 || ry->dtype != GR_DT_BF16) continue;
        const uint16_t *p = rx->data, *q = ry->data;
        uint64_t s = 0, f = 0;
#pragma omp parallel for reduction(+ : s, f)
        for (uint64_t k = 0; k < tx->nelem; k++) {
            uint16_t u, v;
            memcpy(&u, p + k, 2);
            memcpy(&v, q + k, 2);
            if (u == v)
                s++;
            else if (abs((int)(int16_t)u - (int)(int16_t)v) > 1)
                f++;
        }
        *n += tx->nelem;
        *same += s;
        *far += f;
        gr_sparse_release(x, tx);
        gr_sparse_release(y, ty);
    }
out:
    gr_sparse_close(&x);
    gr_sparse_close(&y);
}

int main(int argc, char **argv)
{
    double params = 1e9, density = 0.5;
    const char *dirarg = NULL;
    int threads = 0, torch = 1, keep = 0;
    if (argc == 5 && !strcmp(argv[1], "--child"))
        return child_merge(argv[2], argv[3], atoi(argv[4]));
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--params") && i + 1 < argc)
            params = atof(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dirarg = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--density") && i + 1 < argc)
            density = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch"))
            torch = 0;
        else if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else {
            fprintf(stderr, "usage: bench_merge [--params N] [--dir DIR] [--threads T] "
                            "[--density D] [--no-torch] [--keep]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Both merges run with waiting OpenMP threads asleep, not spinning:
     * spinning threads steal the cores of the ones working whenever the
     * machine runs anything else. */
    if (!getenv("OMP_WAIT_POLICY")) setenv("OMP_WAIT_POLICY", "passive", 1);
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Both merges run with waiting OpenMP threads asleep, not spinning:
     * spinning threads steal the cores of the ones working whenever the
     * machine runs anything else. */
    if (!getenv("OMP_WAIT_POLICY")) setenv("OMP_WAIT_POLICY", "passive", 1);
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    const char *root = dirarg                                  ? dirarg
                       : getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR")
                                                               : "/tmp";
    char *dir = NULL;
    if (gr_fs_mkdtemp(root, "graft-bench-merge-", &dir)) {
        fprintf(stderr, "bench_merge: %s\n", gr_errmsg());
        return 1;
    }
    tdesc *t;
    uint64_t total;
    size_t nt = layout(params, &t, &total);
    double model_bytes = 2.0 * (double)total;
    printf("bench_merge: TIES (density %.2f, weights 1/0.7/0.5) of 3 fine-tunes, %.3g parameters "
           "per model (%zu tensors, %.2f GB bf16 each), %d threads (OMP_WAIT_POLICY=%s), in %s\n",
           density, (double)total, nt, model_bytes / 1e9, threads, getenv("OMP_WAIT_POLICY"), dir);
    char *paths[NMODELS + 1] = {0};
    double t0 = now();
    int rc = 0;
    for (int m = 0; m <= NMODELS && !rc; m++) {
        char name[16];
        snprintf(name, sizeof name, m ? "ft%d" : "base", m);
        paths[m] = gr_fs_join(dir, name);
        rc = generate(paths[m], t, nt, m);
    }
    if (rc) goto out;
    printf("  generated 4 checkpoints in %.1f s\n", now() - t0);

    double bw = triad_gbs();
    printf("  memory bandwidth (triad, %d threads): %.2f GB/s\n", threads, bw);

    char *og = gr_fs_join(dir, "out-graft"), *ot = gr_fs_join(dir, "out-torch");
    char p[8192];
    snprintf(p, sizeof p,
             "{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\",\"%s\",\"%s\"],"
             "\"weights\":[%g,%g,%g],\"density\":%g}",
             paths[0], paths[1], paths[2], paths[3], WEIGHTS[0], WEIGHTS[1], WEIGHTS[2], density);
    child_result g = {0}, tr = {0};
    char self[4096], th0[16];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    self[sl > 0 ? sl : 0] = 0;
    snprintf(th0, sizeof th0, "%d", threads);
    char *gargv[] = {self, "--child", p, og, th0, NULL};
    if (run_child(gargv, &g) || g.status) {
        fprintf(stderr, "bench_merge: the graft merge failed (status %d)\n", g.status);
        rc = 1;
        goto out2;
    }
    double moved = 5 * model_bytes, gbs = moved / g.seconds / 1e9;
    printf("  graft:  %.2f s, %.1f M params/s, peak RSS %.0f MB, %.2f GB/s moved = %.0f%% of "
           "the triad bandwidth\n",
           g.seconds, (double)total / g.seconds / 1e6, g.maxrss_kb / 1024.0, gbs, 100 * gbs / bw);
    if (torch) {
        char script[4096], th[16], dens[32];
        snprintf(script, sizeof script, "%s/bench/merge_torch.py", GRAFT_SOURCE_DIR);
        snprintf(th, sizeof th, "%d", threads);
        snprintf(dens, sizeof dens, "%g", density);
        char *targv[] = {
            "/usr/bin/python3", script,   "--threads", th,       "--density", dens, "--out", ot,
            paths[0],           paths[1], paths[2],    paths[3], NULL};
        if (run_child(targv, &tr) || tr.status) {
            printf("  torch:  not run (status %d; needs python3-torch: GRAFT_WITH_TORCH=1 "
                   "scripts/install-deps)\n",
                   tr.status);
        } else {
            printf("  torch:  %.2f s, %.1f M params/s, peak RSS %.0f MB\n", tr.seconds,
                   (double)total / tr.seconds / 1e6, tr.maxrss_kb / 1024.0);
            printf("  graft vs torch: %.1fx faster, %.2fx the peak memory (%.0f%%)\n",
                   tr.seconds / g.seconds, (double)g.maxrss_kb / (double)tr.maxrss_kb,
                   100.0 * (double)g.maxrss_kb / (double)tr.maxrss_kb);
            uint64_t n, same, far;
            compare(og, ot, &n, &same, &far);
            printf("  outputs: %.4f%% of %llu elements bit-identical, %.2g%% differ by more than "
                   "one bf16 step\n",
                   n ? 100.0 * (double)same / (double)n : 0, (unsigned long long)n,
                   n ? 100.0 * (double)far / (double)n : 0);
        }
    }
    printf("  targets: >= 5x torch's speed, <= 25%% of its peak memory, >= 50%% of memory "
           "bandwidth\n");
out2:
    free(og);
    free(ot);
out:
    if (!keep)
        gr_fs_rmrf(dir);
    else
        printf("  kept %s\n", dir);
    for (int m = 0; m <= NMODELS; m++) free(paths[m]);
    free(dir);
    free(t);
    return rc;
}
