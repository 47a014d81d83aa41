/* bench_read: reading a bf16 checkpoint through gr_ckpt and converting every
 * tensor to fp32, against plain memcpy of the same bytes, in the same run.
 *
 *   bench_read [MB]     size of the generated checkpoint's bf16 data
 *                       (default 1024 MiB; e.g. 64 for a quick run)
 *
 * The checkpoint is written to a temporary directory (TMPDIR or /tmp) with
 * gr_stw and removed at the end. Every figure is over the bf16 bytes read
 * (input), from the page cache and an already-populated mapping (one untimed
 * pass first), best of REPS passes; single-threaded and with all threads.
 * Two access patterns, each against memcpy doing the same: whole tensors into
 * a reused buffer the size of the largest (64 MiB of fp32: the writes go to
 * memory), and 1M-element pieces into a reused 4 MiB buffer (how ops stream
 * tensors: the writes mostly stay in cache). */
#include "gr_err.h"
#include "gr_st.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define ROWS  4096
#define COLS  4096 /* tensors of 4096 x 4096 bf16 = 32 MiB, like a 7B model's */
#define REPS  3
#define CHUNK ((uint64_t)1 << 20) /* elements per piece, as ops stream tensors */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static int generate(const char *dir, uint64_t bytes)
{
    gr_stw *w = gr_stw_new(dir, 0);
    if (!w) return -1;
    uint64_t per = (uint64_t)ROWS * COLS * 2, left = bytes;
    char name[64];
    int nt = 0;
    while (left) {
        uint64_t rows = left >= per ? ROWS : (left + 2 * COLS - 1) / (2 * COLS);
        int64_t shape[2] = {(int64_t)rows, COLS};
        snprintf(name, sizeof name, "model.layers.%d.mlp.weight", nt++);
        if (gr_stw_add(w, name, GR_DT_BF16, 2, shape)) goto fail;
        left -= left >= per ? per : left;
    }
    if (gr_stw_begin(w)) goto fail;
    float *row = malloc(COLS * sizeof *row);
    uint32_t s = 12345;
    for (int t = 0; t < nt; t++) {
        uint64_t rows =
            (t < nt - 1 || bytes % per == 0) ? ROWS : ((bytes % per) + 2 * COLS - 1) / (2 * COLS);
        for (uint64_t r = 0; r < rows; r++) {
            for (int c = 0; c < COLS; c++) {
                s = s * 1664525u + 1013904223u;
                row[c] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.1f;
            }
            if (gr_stw_write_f32(w, row, COLS)) {
                free(row);
                goto fail;
            }
        }
    }
    free(row);
    if (gr_stw_finish(w)) goto fail;
    gr_stw_destroy(&w);
    return 0;
fail:
    fprintf(stderr, "bench_read: %s\n", gr_errmsg());
    gr_stw_destroy(&w);
    return -1;
}

/* One pass over every tensor, in pieces of `chunk` elements (0: the whole
 * tensor) into a reused buffer: converted to fp32, or (the peer) the same
 * bf16 bytes memcpy'd, split over the same threads in the same pieces. */
static double pass(const gr_ckpt *c, int convert, uint64_t chunk, void *buf)
{
    double t0 = now();
    for (size_t i = 0; i < gr_ckpt_count(c); i++) {
        const gr_tensor *t = gr_ckpt_tensor(c, i);
        uint64_t step = chunk ? chunk : t->nelem;
        for (uint64_t off = 0; off < t->nelem; off += step) {
            uint64_t n = t->nelem - off < step ? t->nelem - off : step;
            if (convert) {
                if (gr_tensor_read_f32(t, off, n, buf)) {
                    fprintf(stderr, "bench_read: %s\n", gr_errmsg());
                    exit(1);
                }
                continue;
            }
            const size_t piece = (size_t)1 << 17; /* bytes per OpenMP iteration */
            size_t bytes = (size_t)n * 2, npieces = (bytes + piece - 1) / piece;
            const char *src = (const char *)t->data + off * 2;
            char *dst = buf;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (npieces > 1)
#endif
            for (size_t k = 0; k < npieces; k++) {
                size_t o = k * piece, m = bytes - o < piece ? bytes - o : piece;
                memcpy(dst + o, src + o, m);
            }
        }
    }
    return now() - t0;
}

static double best(const gr_ckpt *c, int convert, uint64_t chunk, void *buf)
{
    double b = 1e30;
    for (int r = 0; r < REPS; r++) {
        double t = pass(c, convert, chunk, buf);
        if (t < b) b = t;
    }
    return b;
}

int main(int argc, char **argv)
{
    double mb = argc > 1 ? atof(argv[1]) : 1024;
    if (!(mb > 0) || mb > 1e6) {
        fprintf(stderr, "usage: bench_read [MB]   (bf16 data size in MiB, default 1024)\n");
        return 2;
    }
    uint64_t bytes = (uint64_t)(mb * 1048576.0) & ~(uint64_t)(2 * COLS - 1);
    if (!bytes) bytes = 2 * COLS;
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/graft-bench-read-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("bench_read: mkdtemp");
        return 1;
    }
    int rc = 1;
    gr_ckpt *c = NULL;
    void *buf = NULL;
    printf("bench_read: generating %.0f MiB of bf16 tensors in %s ...\n", (double)bytes / 1048576,
           dir);
    fflush(stdout);
    if (generate(dir, bytes)) goto done;
    if (!(c = gr_ckpt_open(dir))) {
        fprintf(stderr, "bench_read: %s\n", gr_errmsg());
        goto done;
    }
    uint64_t maxel = 0, total = 0;
    for (size_t i = 0; i < gr_ckpt_count(c); i++) {
        const gr_tensor *t = gr_ckpt_tensor(c, i);
        if (t->nelem > maxel) maxel = t->nelem;
        total += t->nbytes;
    }
    buf = malloc(maxel * sizeof(float));
    if (!buf) goto done;
    memset(buf, 0, maxel * sizeof(float));
    int nthreads = max_threads();
    set_threads(1);
    double first = pass(c, 1, 0, buf); /* page cache warm (just written), mapping not yet */
    double gb = (double)total / 1e9;
    printf("%zu tensors, %.3f GB of bf16 (GB = 1e9 bytes; every rate below is bf16 bytes read "
           "per second; best of %d passes)\n",
           gr_ckpt_count(c), gb, REPS);
    printf("first pass, 1 thread, whole tensors, page faults included: %.2f GB/s\n", gb / first);
    for (int th = 1;; th = nthreads) {
        set_threads(th);
        pass(c, 0, 0, buf); /* settle this thread count */
        for (int m = 0; m < 2; m++) {
            uint64_t chunk = m ? CHUNK : 0;
            double tc = best(c, 1, chunk, buf), tm = best(c, 0, chunk, buf);
            printf("%2d thread%s %-22s bf16->fp32 %6.2f GB/s   memcpy %6.2f GB/s   ratio %.2f\n",
                   th, th == 1 ? ": " : "s:", m ? "1M-element chunks:" : "whole tensors:", gb / tc,
                   gb / tm, tm / tc);
        }
        if (th == nthreads) break;
    }
    rc = 0;
done:
    gr_ckpt_close(&c);
    free(buf);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_read: could not remove %s\n", dir);
    return rc;
}
