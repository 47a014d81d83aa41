/* nbody-train op: trains the paper's DQN to choose the Hermite time-step
 * parameter mu every chunk of random three-body runs. Output tree: the policy
 * artifact (config.json + model.safetensors) and the training curve
 * (training.csv, training.svg); metrics JSON with episodes/s. */
#include "gr_log.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_nbrl.h"
#include "gr_op.h"
#include "gr_svg.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CSV_FILE "training.csv"
#define SVG_FILE "training.svg"
#define SMOOTH   50 /* episodes in the moving average of the curve */

static const gr_param train_params[] = {
    {"episodes", GR_P_INT, 0, "training episodes (default 2000)"},
    {"seed", GR_P_INT, 0, "seed of network, exploration and initial conditions (default 0)"},
    {"chunks", GR_P_INT, 0, "chunks per episode at most (default 100)"},
    {"chunk", GR_P_NUM, 0, "time units per decision (default 0.1 yr = 1.0883)"},
    {"stop_error", GR_P_NUM, 0, "episode ends when |dE/E0| exceeds this (default 0.1)"},
    {"w1", GR_P_NUM, 0, "reward weight of the energy error (default 3000)"},
    {"w3", GR_P_NUM, 0, "reward weight of the step size (default 4)"},
    {"integrator", GR_P_STR, 0, "hermite (default) or aarseth"},
    {"hidden", GR_P_INT, 0, "hidden layer width (default 200)"},
    {"repeat", GR_P_INT, 0, "applications of the shared hidden layer (default 9)"},
    {"lr", GR_P_NUM, 0, "AdamW learning rate (default 1e-3)"},
    {"weight_decay", GR_P_NUM, 0, "AdamW weight decay (default 0.01)"},
    {"amsgrad", GR_P_BOOL, 0, "AMSGrad variant (default true)"},
    {"grad_clip", GR_P_NUM, 0, "clamp each gradient to +-this (default 100, 0 = off)"},
    {"huber_delta", GR_P_NUM, 0, "Huber loss threshold (default 1)"},
    {"batch", GR_P_INT, 0, "minibatch size (default 128)"},
    {"replay", GR_P_INT, 0, "replay buffer capacity (default 10000)"},
    {"gamma", GR_P_NUM, 0, "discount (default 0.99)"},
    {"tau", GR_P_NUM, 0, "soft target update rate (default 0.005)"},
    {"eps_start", GR_P_NUM, 0, "initial exploration rate (default 0.9)"},
    {"eps_end", GR_P_NUM, 0, "final exploration rate (default 0.05)"},
    {"eps_decay", GR_P_NUM, 0, "exploration decay constant in steps (default 1000)"},
    {"train_every", GR_P_INT, 0, "optimisation step every this many chunks (default 1)"},
    {NULL, 0, 0, NULL},
};

typedef struct train_state {
    gr_op_ctx *ctx;
    int episodes;
    gr_nbrl_episode *log;
    double t0;
} train_state;

static int on_episode(void *ud, const gr_nbrl_episode *ep)
{
    train_state *ts = ud;
    ts->log[ep->episode] = *ep;
    double el = gr_now_s() - ts->t0;
    gr_op_progress(ts->ctx, ep->episode + 1, ts->episodes,
                   "episode %d/%d: reward %.1f, |dE/E0| %.2e after %d chunks, mean log10 mu "
                   "%.2f, epsilon %.3f, %.2f episodes/s",
                   ep->episode + 1, ts->episodes, ep->reward, ep->de_final, ep->chunks,
                   ep->log_mu_mean, ep->epsilon, el > 0 ? (ep->episode + 1) / el : 0);
    return gr_op_cancelled(ts->ctx);
}

/* Reads an int parameter within [lo, hi]. */
static int get_int(gr_op_ctx *ctx, const char *name, int def, int lo, int hi, int *out)
{
    int64_t v;
    int rc = gr_op_int(ctx, name, def, &v);
    if (rc) return rc;
    if (v < lo || v > hi)
        return gr_seterr(GR_EINVAL, "nbody-train: parameter '%s' = %lld outside %d..%d", name,
                         (long long)v, lo, hi);
    *out = (int)v;
    return 0;
}

static int get_num(gr_op_ctx *ctx, const char *name, double def, double *out)
{
    int rc = gr_op_num(ctx, name, def, out);
    if (!rc && !isfinite(*out))
        return gr_seterr(GR_EINVAL, "nbody-train: parameter '%s' must be finite", name);
    return rc;
}

/* Reads every parameter into c; range errors name the parameter. */
static int read_cfg(gr_op_ctx *ctx, gr_nbrl_train_cfg *c, int64_t *seed)
{
    gr_nbrl_train_default(c);
    gr_dqn_config *d = &c->dqn;
    double lr, wd, clip, hd, gamma, tau;
    const char *integ;
    int rc;
    if ((rc = get_int(ctx, "episodes", c->episodes, 1, 10000000, &c->episodes)) ||
        (rc = gr_op_int(ctx, "seed", 0, seed)) ||
        (rc = get_int(ctx, "chunks", c->chunks, 1, 1000000, &c->chunks)) ||
        (rc = get_num(ctx, "chunk", c->chunk, &c->chunk)) ||
        (rc = get_num(ctx, "stop_error", c->stop_error, &c->stop_error)) ||
        (rc = get_num(ctx, "w1", c->reward.w1, &c->reward.w1)) ||
        (rc = get_num(ctx, "w3", c->reward.w3, &c->reward.w3)) ||
        (rc = gr_op_str(ctx, "integrator", "hermite", &integ)) ||
        (rc = gr_nbrl_integrator_parse("nbody-train", integ, &c->integrator)) ||
        (rc = get_int(ctx, "hidden", d->shape.hidden, 1, GR_QNET_MAX_WIDTH, &d->shape.hidden)) ||
        (rc = get_int(ctx, "repeat", d->shape.repeat, 0, GR_QNET_MAX_REPEAT, &d->shape.repeat)) ||
        (rc = get_num(ctx, "lr", d->lr, &lr)) ||
        (rc = get_num(ctx, "weight_decay", d->weight_decay, &wd)) ||
        (rc = gr_op_bool(ctx, "amsgrad", d->amsgrad, &d->amsgrad)) ||
        (rc = get_num(ctx, "grad_clip", d->grad_clip, &clip)) ||
        (rc = get_num(ctx, "huber_delta", d->huber_delta, &hd)) ||
        (rc = get_int(ctx, "batch", d->batch, 1, 4096, &d->batch)) ||
        (rc = get_int(ctx, "replay", d->replay, 1, 10000000, &d->replay)) ||
        (rc = get_num(ctx, "gamma", d->gamma, &gamma)) ||
        (rc = get_num(ctx, "tau", d->tau, &tau)) ||
        (rc = get_num(ctx, "eps_start", d->eps_start, &d->eps_start)) ||
        (rc = get_num(ctx, "eps_end", d->eps_end, &d->eps_end)) ||
        (rc = get_num(ctx, "eps_decay", d->eps_decay, &d->eps_decay)) ||
        (rc = get_int(ctx, "train_every", c->train_every, 1, 1000000, &c->train_every)))
        return rc;
    if (*seed < 0)
        return gr_seterr(GR_EINVAL, "nbody-train: parameter 'seed' = %lld must be >= 0",
                         (long long)*seed);
    d->lr = (float)lr, d->weight_decay = (float)wd, d->grad_clip = (float)clip;
    d->huber_delta = (float)hd, d->gamma = (float)gamma, d->tau = (float)tau;
    d->seed = (uint64_t)*seed;
    c->seed = (uint64_t)*seed;
    c->cancel = ctx->cancel;
    rc = gr_nbrl_train_check(c);
    if (rc) return gr_adderr(rc, "nbody-train: parameters");
    return 0;
}

static double moving_mean(const double *v, int i, int w)
{
    int lo = i - w + 1 < 0 ? 0 : i - w + 1, n = 0;
    double s = 0;
    for (int k = lo; k <= i; k++)
        if (isfinite(v[k])) s += v[k], n++;
    return n ? s / n : NAN;
}

/* Reward, final error and mean log10 mu per episode with moving averages. */
static int write_curve(const char *path, const gr_nbrl_episode *log, int n)
{
    double *x = malloc(n * sizeof *x), *r = malloc(n * sizeof *r), *e = malloc(n * sizeof *e),
           *m = malloc(n * sizeof *m), *s = malloc(n * sizeof *s);
    gr_svg_plot *pr = gr_svg_new(460, 360), *pe = gr_svg_new(460, 360), *pm = gr_svg_new(460, 360);
    int rc;
    if (!x || !r || !e || !m || !s || !pr || !pe || !pm) {
        rc = gr_seterr(GR_ENOMEM, "nbody-train: out of memory for the plot");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        x[i] = i + 1;
        r[i] = log[i].reward;
        e[i] = log[i].de_final;
        m[i] = pow(10, log[i].log_mu_mean);
    }
    char avg[64];
    snprintf(avg, sizeof avg, "mean of %d", SMOOTH);
    gr_svg_title(pr, "episode reward");
    gr_svg_xlabel(pr, "episode");
    gr_svg_ylabel(pr, "reward");
    if ((rc = gr_svg_scatter(pr, NULL, x, r, (size_t)n)) < 0) goto done;
    gr_svg_series_markers(pr, rc, 1.5);
    gr_svg_series_color(pr, rc, "#9ab");
    for (int i = 0; i < n; i++) s[i] = moving_mean(r, i, SMOOTH);
    if ((rc = gr_svg_line(pr, avg, x, s, (size_t)n)) < 0) goto done;
    gr_svg_title(pe, "final energy error");
    gr_svg_xlabel(pe, "episode");
    gr_svg_ylabel(pe, "|dE/E0|");
    gr_svg_ylog(pe, 1);
    if ((rc = gr_svg_scatter(pe, NULL, x, e, (size_t)n)) < 0) goto done;
    gr_svg_series_markers(pe, rc, 1.5);
    gr_svg_series_color(pe, rc, "#9ab");
    for (int i = 0; i < n; i++) {
        double l[1];
        int lo = i - SMOOTH + 1 < 0 ? 0 : i - SMOOTH + 1, k = 0;
        double acc = 0;
        for (int j = lo; j <= i; j++)
            if (e[j] > 0) acc += log10(e[j]), k++;
        l[0] = k ? pow(10, acc / k) : NAN;
        s[i] = l[0];
    }
    if ((rc = gr_svg_line(pe, "geometric mean", x, s, (size_t)n)) < 0) goto done;
    gr_svg_title(pm, "mu chosen (geometric mean per episode)");
    gr_svg_xlabel(pm, "episode");
    gr_svg_ylabel(pm, "mu");
    gr_svg_ylog(pm, 1);
    if ((rc = gr_svg_scatter(pm, NULL, x, m, (size_t)n)) < 0) goto done;
    gr_svg_series_markers(pm, rc, 1.5);
    gr_svg_series_color(pm, rc, "#9ab");
    for (int i = 0; i < n; i++) {
        double acc = 0;
        int lo = i - SMOOTH + 1 < 0 ? 0 : i - SMOOTH + 1;
        for (int j = lo; j <= i; j++) acc += log[j].log_mu_mean;
        s[i] = pow(10, acc / (i - lo + 1));
    }
    if ((rc = gr_svg_line(pm, avg, x, s, (size_t)n)) < 0) goto done;
    const gr_svg_plot *g[3] = {pr, pe, pm};
    rc = gr_svg_save_grid(g, 3, 3, path);
done:
    gr_svg_destroy(&pr);
    gr_svg_destroy(&pe);
    gr_svg_destroy(&pm);
    free(x);
    free(r);
    free(e);
    free(m);
    free(s);
    return rc < 0 ? rc : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int train_run(gr_op_ctx *ctx)
{
    gr_nbrl_train_cfg c;
    int64_t seed;
    gr_dqn *agent = NULL;
    gr_buf csv = {0}, mb = {0}, tj = {0};
    char *csv_path = NULL, *svg_path = NULL;
    double *tail = NULL;
    train_state ts = {.ctx = ctx};
    int rc = read_cfg(ctx, &c, &seed);
    if (rc) return rc;
    if (ctx->threads > 0) openblas_set_num_threads(ctx->threads);
    ts.episodes = c.episodes;
    ts.log = calloc((size_t)c.episodes, sizeof *ts.log);
    if (!ts.log) return gr_seterr(GR_ENOMEM, "nbody-train: out of memory");
    ts.t0 = gr_now_s();
    if ((rc = gr_nbrl_train(&c, on_episode, &ts, &agent))) goto done;
    double wall = gr_now_s() - ts.t0;

    /* summary over the last 100 episodes (or all when fewer) */
    int n = c.episodes, k0 = n > 100 ? n - 100 : 0, nt = n - k0;
    uint64_t env_steps = 0, integ_steps = 0;
    double rsum = 0, musum = 0;
    tail = malloc((size_t)nt * sizeof *tail);
    if (!tail) {
        rc = gr_seterr(GR_ENOMEM, "nbody-train: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        env_steps += (uint64_t)ts.log[i].chunks;
        integ_steps += ts.log[i].steps;
    }
    for (int i = k0; i < n; i++) {
        rsum += ts.log[i].reward;
        musum += ts.log[i].log_mu_mean;
        tail[i - k0] = ts.log[i].de_final;
    }
    qsort(tail, (size_t)nt, sizeof *tail, cmp_double);
    gr_buf_printf(&tj,
                  "{\"episodes\":%d,\"seed\":%lld,\"chunks\":%d,\"stop_error\":%.17g,"
                  "\"lr\":%.9g,\"batch\":%d,\"replay\":%d,\"gamma\":%.9g,\"tau\":%.9g,"
                  "\"eps_start\":%.9g,\"eps_end\":%.9g,\"eps_decay\":%.9g,\"weight_decay\":%.9g,"
                  "\"amsgrad\":%s,\"grad_clip\":%.9g,\"huber_delta\":%.9g,\"train_every\":%d,"
                  "\"wall_s\":%.6g}",
                  c.episodes, (long long)seed, c.chunks, c.stop_error, (double)c.dqn.lr,
                  c.dqn.batch, c.dqn.replay, (double)c.dqn.gamma, (double)c.dqn.tau,
                  c.dqn.eps_start, c.dqn.eps_end, c.dqn.eps_decay, (double)c.dqn.weight_decay,
                  c.dqn.amsgrad ? "true" : "false", (double)c.dqn.grad_clip,
                  (double)c.dqn.huber_delta, c.train_every, wall);
    if (tj.oom) {
        rc = gr_seterr(GR_ENOMEM, "nbody-train: out of memory");
        goto done;
    }
    gr_nbrl_policy_info info = {.actions = c.actions,
                                .n_actions = c.n_actions,
                                .scale = c.scale,
                                .chunk = c.chunk,
                                .reward = c.reward,
                                .integrator = gr_nbrl_integrator_name(c.integrator),
                                .training_json = tj.data};
    if ((rc = gr_nbrl_policy_save(gr_dqn_policy(agent), &info, ctx->outdir))) goto done;

    gr_buf_puts(&csv, "episode,ic_seed,chunks,reward,energy_error_final,log10_mu_mean,steps,"
                      "loss,epsilon,ended_early\n");
    for (int i = 0; i < n; i++) {
        const gr_nbrl_episode *e = &ts.log[i];
        gr_buf_printf(&csv, "%d,%llu,%d,%.9g,%.9g,%.6f,%llu,%.9g,%.6f,%d\n", e->episode + 1,
                      (unsigned long long)e->ic_seed, e->chunks, e->reward, e->de_final,
                      e->log_mu_mean, (unsigned long long)e->steps, e->loss, e->epsilon,
                      e->ended_early);
    }
    if (csv.oom || !(csv_path = gr_fs_join(ctx->outdir, CSV_FILE)) ||
        !(svg_path = gr_fs_join(ctx->outdir, SVG_FILE))) {
        rc = gr_seterr(GR_ENOMEM, "nbody-train: out of memory");
        goto done;
    }
    if ((rc = gr_fs_write_atomic(csv_path, csv.data, csv.len, 0644))) goto done;
    if ((rc = write_curve(svg_path, ts.log, n))) goto done;

    gr_buf_printf(&mb, "{\"episodes\":%d,\"seed\":%lld,\"integrator\":\"%s\",\"wall_s\":", n,
                  (long long)seed, gr_nbrl_integrator_name(c.integrator));
    gr_buf_json_num(&mb, wall);
    gr_buf_puts(&mb, ",\"episodes_per_s\":");
    gr_buf_json_num(&mb, wall > 0 ? n / wall : 0);
    gr_buf_printf(&mb, ",\"env_steps\":%llu,\"integration_steps\":%llu,\"train_steps\":%llu",
                  (unsigned long long)env_steps, (unsigned long long)integ_steps,
                  (unsigned long long)(env_steps / (uint64_t)c.train_every));
    gr_buf_puts(&mb, ",\"epsilon_final\":");
    gr_buf_json_num(&mb, gr_dqn_epsilon(agent));
    gr_buf_puts(&mb, ",\"reward_mean_last100\":");
    gr_buf_json_num(&mb, rsum / nt);
    gr_buf_puts(&mb, ",\"energy_error_median_last100\":");
    gr_buf_json_num(&mb, nt % 2 ? tail[nt / 2] : 0.5 * (tail[nt / 2 - 1] + tail[nt / 2]));
    gr_buf_puts(&mb, ",\"mu_geomean_last100\":");
    gr_buf_json_num(&mb, pow(10, musum / nt));
    gr_buf_printf(&mb, ",\"threads\":%d}", ctx->threads);
    if (mb.oom) {
        rc = gr_seterr(GR_ENOMEM, "nbody-train: out of memory");
        goto done;
    }
    rc = gr_op_set_metrics(ctx, mb.data);
done:
    gr_dqn_destroy(&agent);
    free(ts.log);
    free(tail);
    gr_buf_free(&csv);
    gr_buf_free(&mb);
    gr_buf_free(&tj);
    free(csv_path);
    free(svg_path);
    return rc;
}

const gr_op gr_op_nbody_train = {
    .name = "nbody-train",
    .version = 1,
    .summary = "trains a DQN policy choosing the N-body time-step parameter mu per chunk",
    .params = train_params,
    .run = train_run,
};
