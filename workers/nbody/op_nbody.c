/* nbody op: integrates an N-body system (Pythagorean, the paper's random
 * triple, or explicit bodies) with shared-step Hermite, mu chosen per chunk
 * by a fixed value or a trained RL policy. Output tree: nbody.csv (one row
 * per chunk) and nbody.svg (orbits, energy error, mu); metrics JSON. */
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_log.h"
#include "gr_nbody.h"
#include "gr_nbrl.h"
#include "gr_op.h"
#include "gr_svg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MU     0.01
#define DEFAULT_CHUNKS 300 /* the paper's evaluation length */
#define MAX_CHUNKS     10000000
#define ORBIT_BODIES   16   /* bodies drawn in the orbit plot */
#define ORBIT_POINTS   4000 /* samples kept per body (decimated by 2 when full) */
#define CSV_FILE       "nbody.csv"
#define SVG_FILE       "nbody.svg"

static const gr_param nbody_params[] = {
    {"ic", GR_P_STR, 0,
     "initial condition: pythagorean (default), random3 (the paper's triple, with seed) or "
     "explicit (masses, positions, velocities)"},
    {"seed", GR_P_INT, 0, "random3: seed of the initial condition (default 0)"},
    {"masses", GR_P_NUMS, 0, "explicit: one mass > 0 per body"},
    {"positions", GR_P_ANY, 0, "explicit: one [x, y] or [x, y, z] per body"},
    {"velocities", GR_P_ANY, 0, "explicit: one [vx, vy] or [vx, vy, vz] per body"},
    {"integrator", GR_P_STR, 0, "hermite (default; mu criterion) or aarseth"},
    {"policy", GR_P_STR, 0, "fixed (default; uses mu) or rl (uses model)"},
    {"mu", GR_P_NUM, 0, "fixed time-step parameter (default 0.01)"},
    {"model", GR_P_INPUT, 0, "rl: the policy artifact (output of an nbody-train stage)"},
    {"chunk", GR_P_NUM, 0, "time units per decision (default the policy's, else 0.1 yr)"},
    {"chunks", GR_P_INT, 0, "number of chunks (default 300)"},
    {"t_end", GR_P_NUM, 0, "end time instead of chunks (the last chunk ends exactly there)"},
    {"stop_error", GR_P_NUM, 0, "stop once |dE/E0| exceeds this (default never)"},
    {NULL, 0, 0, NULL},
};

/* Orbit samples: every stride-th step, thinned by 2 when the buffer fills. */
typedef struct orbits {
    size_t nb;     /* bodies recorded */
    double *x, *y; /* [ORBIT_POINTS][nb] */
    size_t n;
    uint64_t stride, seen;
} orbits;

static void orbit_add(orbits *o, const gr_nbody *nb)
{
    const double *x = gr_nbody_positions(nb);
    if (o->n == ORBIT_POINTS) {
        for (size_t i = 0; i < ORBIT_POINTS / 2; i++)
            for (size_t b = 0; b < o->nb; b++) {
                o->x[i * o->nb + b] = o->x[2 * i * o->nb + b];
                o->y[i * o->nb + b] = o->y[2 * i * o->nb + b];
            }
        o->n = ORBIT_POINTS / 2;
        o->stride *= 2;
    }
    for (size_t b = 0; b < o->nb; b++) {
        o->x[o->n * o->nb + b] = x[3 * b];
        o->y[o->n * o->nb + b] = x[3 * b + 1];
    }
    o->n++;
}

static void orbit_observe(void *ud, const gr_nbody *nb)
{
    orbits *o = ud;
    if (o->seen++ % o->stride == 0) orbit_add(o, nb);
}

typedef struct run_state {
    gr_op_ctx *ctx;
    gr_buf csv;
    gr_nbrl_chunk *rows;
    size_t nrows, cap;
    int total;
} run_state;

static int on_chunk(void *ud, const gr_nbody *nb, const gr_nbrl_chunk *r)
{
    run_state *rs = ud;
    gr_buf *b = &rs->csv;
    gr_buf_printf(b, "%d,%.17g,%.17g,%.17g,%.9g,%d,%llu", r->chunk, r->t, r->de, fabs(r->de), r->mu,
                  r->action, (unsigned long long)r->steps);
    const double *x = gr_nbody_positions(nb);
    for (size_t i = 0; i < gr_nbody_n(nb); i++)
        gr_buf_printf(b, ",%.17g,%.17g,%.17g", x[3 * i], x[3 * i + 1], x[3 * i + 2]);
    gr_buf_putc(b, '\n');
    if (rs->nrows == rs->cap) {
        size_t cap = rs->cap ? 2 * rs->cap : 256;
        gr_nbrl_chunk *n = realloc(rs->rows, cap * sizeof *n);
        if (!n) return 1; /* reported as out of memory below */
        rs->rows = n;
        rs->cap = cap;
    }
    rs->rows[rs->nrows++] = *r;
    gr_op_progress(rs->ctx, r->chunk, rs->total, "chunk %d/%d: t %.4g |dE/E0| %.2e mu %.3g",
                   r->chunk, rs->total, r->t, fabs(r->de), r->mu);
    return gr_op_cancelled(rs->ctx) || b->oom;
}

/* A list of n vectors of 2 or 3 numbers (z = 0 when absent) into out[3n]. */
static int parse_vectors(const char *name, const gr_json *v, size_t n, double *out)
{
    if (!v || v->type != GR_JSON_ARR || v->len != n)
        return gr_seterr(GR_EINVAL,
                         "nbody: parameter '%s' must be a list of %zu [x, y] or [x, y, z] lists "
                         "(one per mass)",
                         name, n);
    for (size_t i = 0; i < n; i++) {
        const gr_json *e = v->items[i];
        if (e->type != GR_JSON_ARR || e->len < 2 || e->len > 3)
            return gr_seterr(GR_EINVAL, "nbody: parameter '%s[%zu]' must be [x, y] or [x, y, z]",
                             name, i);
        out[3 * i + 2] = 0;
        for (size_t k = 0; k < e->len; k++) {
            if (e->items[k]->type != GR_JSON_NUM)
                return gr_seterr(GR_EINVAL, "nbody: parameter '%s[%zu][%zu]' must be a number",
                                 name, i, k);
            out[3 * i + k] = e->items[k]->num;
        }
    }
    return 0;
}

static gr_nbody *make_ic(gr_op_ctx *ctx, const char **ic_name)
{
    const char *ic;
    int64_t seed;
    const gr_json *P = ctx->params;
    int explicit_given =
        gr_json_get(P, "masses") || gr_json_get(P, "positions") || gr_json_get(P, "velocities");
    if (gr_op_str(ctx, "ic", explicit_given ? "explicit" : "pythagorean", &ic) ||
        gr_op_int(ctx, "seed", 0, &seed))
        return NULL;
    *ic_name = ic;
    if (strcmp(ic, "explicit") && explicit_given) {
        gr_seterr(GR_EINVAL, "nbody: masses/positions/velocities need ic = explicit, not '%s'", ic);
        return NULL;
    }
    if (strcmp(ic, "random3") && gr_json_get(P, "seed")) {
        gr_seterr(GR_EINVAL, "nbody: parameter 'seed' is only used with ic = random3");
        return NULL;
    }
    if (!strcmp(ic, "pythagorean")) return gr_nbody_pythagorean();
    if (!strcmp(ic, "random3")) {
        if (seed < 0) {
            gr_seterr(GR_EINVAL, "nbody: parameter 'seed' = %lld must be >= 0", (long long)seed);
            return NULL;
        }
        return gr_nbody_random3((uint64_t)seed);
    }
    if (strcmp(ic, "explicit")) {
        gr_seterr(GR_EINVAL,
                  "nbody: parameter 'ic' = '%s': must be pythagorean, random3 or explicit", ic);
        return NULL;
    }
    const gr_json *m = gr_json_get(P, "masses");
    if (!m || m->type != GR_JSON_ARR || m->len < 2 || m->len > GR_NBODY_MAX) {
        gr_seterr(GR_EINVAL, "nbody: ic = explicit needs 'masses', a list of 2..%d numbers",
                  GR_NBODY_MAX);
        return NULL;
    }
    size_t n = m->len;
    double *mass = malloc(n * sizeof *mass), *x = malloc(3 * n * sizeof *x),
           *v = malloc(3 * n * sizeof *v);
    gr_nbody *nb = NULL;
    if (!mass || !x || !v) {
        gr_seterr(GR_ENOMEM, "nbody: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) mass[i] = m->items[i]->num;
    if (parse_vectors("positions", gr_json_get(P, "positions"), n, x) ||
        parse_vectors("velocities", gr_json_get(P, "velocities"), n, v))
        goto done;
    nb = gr_nbody_new(n, mass, x, v);
done:
    free(mass);
    free(x);
    free(v);
    return nb;
}

static void json_vec3s(gr_buf *b, const double *v, size_t n)
{
    gr_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        gr_buf_puts(b, i ? ",[" : "[");
        for (int k = 0; k < 3; k++) {
            if (k) gr_buf_putc(b, ',');
            gr_buf_json_num(b, v[3 * i + k]);
        }
        gr_buf_putc(b, ']');
    }
    gr_buf_putc(b, ']');
}

/* Orbits, |dE/E0| against time and mu against time, side by side. */
static int write_plot(const char *path, const orbits *o, const run_state *rs, int rl,
                      const char *title)
{
    gr_svg_plot *po = gr_svg_new(460, 420), *pe = gr_svg_new(460, 420), *pm = gr_svg_new(460, 420);
    double *t = malloc((rs->nrows + 1) * sizeof *t), *e = malloc((rs->nrows + 1) * sizeof *e);
    double *m = malloc((rs->nrows + 1) * sizeof *m);
    double *bx = malloc((o->n ? o->n : 1) * sizeof *bx),
           *by = malloc((o->n ? o->n : 1) * sizeof *by);
    int rc = GR_ENOMEM;
    if (!po || !pe || !pm || !t || !e || !m || !bx || !by) {
        rc = gr_seterr(GR_ENOMEM, "nbody: out of memory for the plot");
        goto done;
    }
    gr_svg_title(po, title);
    gr_svg_xlabel(po, "x");
    gr_svg_ylabel(po, "y");
    gr_svg_equal_aspect(po, 1);
    for (size_t b = 0; b < o->nb; b++) {
        for (size_t i = 0; i < o->n; i++) bx[i] = o->x[i * o->nb + b], by[i] = o->y[i * o->nb + b];
        char label[32];
        snprintf(label, sizeof label, "body %zu", b);
        if ((rc = gr_svg_line(po, label, bx, by, o->n)) < 0) goto done;
        gr_svg_series_width(po, rc, 1);
    }
    for (size_t i = 0; i < rs->nrows; i++) {
        t[i] = rs->rows[i].t;
        e[i] = fabs(rs->rows[i].de);
        m[i] = rs->rows[i].mu;
    }
    gr_svg_title(pe, "energy error");
    gr_svg_xlabel(pe, "time (N-body units)");
    gr_svg_ylabel(pe, "|dE/E0|");
    gr_svg_ylog(pe, 1);
    if ((rc = gr_svg_line(pe, NULL, t, e, rs->nrows)) < 0) goto done;
    gr_svg_title(pm, rl ? "mu chosen by the policy" : "mu (fixed)");
    gr_svg_xlabel(pm, "time (N-body units)");
    gr_svg_ylabel(pm, "mu");
    gr_svg_ylog(pm, 1);
    if ((rc = gr_svg_line(pm, NULL, t, m, rs->nrows)) < 0) goto done;
    gr_svg_series_markers(pm, rc, 1.5);
    const gr_svg_plot *grid[3] = {po, pe, pm};
    rc = gr_svg_save_grid(grid, 3, 3, path);
done:
    gr_svg_destroy(&po);
    gr_svg_destroy(&pe);
    gr_svg_destroy(&pm);
    free(t);
    free(e);
    free(m);
    free(bx);
    free(by);
    return rc < 0 ? rc : 0;
}

static int nbody_run(gr_op_ctx *ctx)
{
    gr_nbody *nb = NULL;
    gr_nbrl_policy *pol = NULL;
    run_state rs = {.ctx = ctx};
    orbits orb = {.stride = 1};
    gr_buf mb = {0};
    char *csv_path = NULL, *svg_path = NULL;
    int rc;
    const char *ic_name = "", *integ_name, *policy, *model = NULL;
    double mu, chunk, t_end, stop_error;
    int64_t chunks;
    gr_nb_integrator integ;

    if ((rc = gr_op_str(ctx, "integrator", "hermite", &integ_name)) ||
        (rc = gr_nbrl_integrator_parse("nbody", integ_name, &integ)) ||
        (rc = gr_op_str(ctx, "policy", "fixed", &policy)) ||
        (rc = gr_op_num(ctx, "mu", DEFAULT_MU, &mu)) ||
        (rc = gr_op_str(ctx, "model", NULL, &model)) || (rc = gr_op_num(ctx, "t_end", 0, &t_end)) ||
        (rc = gr_op_int(ctx, "chunks", DEFAULT_CHUNKS, &chunks)) ||
        (rc = gr_op_num(ctx, "stop_error", 0, &stop_error)))
        goto done;
    int rl = !strcmp(policy, "rl");
    if (!rl && strcmp(policy, "fixed")) {
        rc = gr_seterr(GR_EINVAL, "nbody: parameter 'policy' = '%s': must be fixed or rl", policy);
        goto done;
    }
    if (rl && gr_json_get(ctx->params, "mu")) {
        rc = gr_seterr(GR_EINVAL, "nbody: parameter 'mu' is for policy fixed; policy rl takes mu "
                                  "from the model");
        goto done;
    }
    if (rl && !model) {
        rc = gr_seterr(GR_EINVAL, "nbody: policy rl needs parameter 'model' (an nbody-train "
                                  "output)");
        goto done;
    }
    if (!rl && model) {
        rc = gr_seterr(GR_EINVAL, "nbody: parameter 'model' is only used with policy rl");
        goto done;
    }
    if (!rl && (!isfinite(mu) || !(mu > 0))) {
        rc = gr_seterr(GR_EINVAL, "nbody: parameter 'mu' = %g: the time-step parameter must be > 0",
                       mu);
        goto done;
    }
    if (gr_json_get(ctx->params, "t_end") && gr_json_get(ctx->params, "chunks")) {
        rc = gr_seterr(GR_EINVAL, "nbody: give 't_end' or 'chunks', not both");
        goto done;
    }
    if (gr_json_get(ctx->params, "t_end") && (!isfinite(t_end) || !(t_end > 0))) {
        rc = gr_seterr(GR_EINVAL, "nbody: parameter 't_end' = %g must be > 0", t_end);
        goto done;
    }
    if (chunks < 1 || chunks > MAX_CHUNKS) {
        rc = gr_seterr(GR_EINVAL, "nbody: parameter 'chunks' = %lld outside 1..%d",
                       (long long)chunks, MAX_CHUNKS);
        goto done;
    }
    if (!isfinite(stop_error) || stop_error < 0) {
        rc = gr_seterr(GR_EINVAL, "nbody: parameter 'stop_error' = %g must be >= 0", stop_error);
        goto done;
    }
    if (rl && !(pol = gr_nbrl_policy_load(model))) {
        rc = gr_adderr(gr_errcode(), "nbody: parameter 'model'");
        goto done;
    }
    if ((rc = gr_op_num(ctx, "chunk", pol ? gr_nbrl_policy_chunk(pol) : gr_nbody_default_chunk(),
                        &chunk)))
        goto done;
    if (!isfinite(chunk) || !(chunk > 0)) {
        rc = gr_seterr(GR_EINVAL, "nbody: parameter 'chunk' = %g must be > 0", chunk);
        goto done;
    }
    if (t_end > 0 && t_end / chunk > MAX_CHUNKS) {
        rc = gr_seterr(GR_EINVAL, "nbody: t_end / chunk = %g chunks (limit %d)", t_end / chunk,
                       MAX_CHUNKS);
        goto done;
    }
    if (!(nb = make_ic(ctx, &ic_name))) {
        rc = gr_errcode();
        goto done;
    }
    if (rl && gr_nbody_n(nb) != 3) {
        rc = gr_seterr(GR_EINVAL, "nbody: policy rl steers 3 bodies, ic '%s' has %zu", ic_name,
                       gr_nbody_n(nb));
        goto done;
    }
    gr_nbody_set_integrator(nb, integ);
    gr_nbody_set_cancel(nb, ctx->cancel);
    size_t n = gr_nbody_n(nb);
    orb.nb = n < ORBIT_BODIES ? n : ORBIT_BODIES;
    orb.x = malloc(ORBIT_POINTS * orb.nb * sizeof *orb.x);
    orb.y = malloc(ORBIT_POINTS * orb.nb * sizeof *orb.y);
    if (!orb.x || !orb.y) {
        rc = gr_seterr(GR_ENOMEM, "nbody: out of memory");
        goto done;
    }
    orbit_add(&orb, nb);
    gr_nbody_set_observer(nb, orbit_observe, &orb);

    gr_buf_puts(&rs.csv, "chunk,t,energy_error,abs_energy_error,mu,action,steps");
    for (size_t i = 0; i < n; i++) gr_buf_printf(&rs.csv, ",x%zu,y%zu,z%zu", i, i, i);
    gr_buf_putc(&rs.csv, '\n');
    gr_nbrl_run_cfg rc_cfg = {.chunk = chunk,
                              .chunks = (int)chunks,
                              .t_end = t_end,
                              .mu = mu,
                              .policy = pol,
                              .stop_error = stop_error,
                              .on_chunk = on_chunk,
                              .ud = &rs};
    rs.total = t_end > 0 ? (int)ceil(t_end / chunk - 1e-9) : (int)chunks;
    gr_nbrl_run_result res;
    double t0 = gr_now_s();
    rc = gr_nbrl_run(nb, &rc_cfg, &res);
    double wall = gr_now_s() - t0;
    if (rc) goto done;
    if (gr_op_cancelled(ctx)) {
        rc = gr_seterr(GR_ECANCEL, "nbody: cancelled at t = %g", gr_nbody_time(nb));
        goto done;
    }
    if (rs.csv.oom || rs.nrows < (size_t)res.chunks) {
        rc = gr_seterr(GR_ENOMEM, "nbody: out of memory for the chunk table");
        goto done;
    }
    orbit_add(&orb, nb);
    const char *status = res.collapsed ? "collapsed" : res.stopped ? "stopped" : "ok";
    if (res.collapsed)
        GR_WARN("nbody", "time step collapsed at t = %g (a collision); results up to there",
                gr_nbody_time(nb));

    if (!(csv_path = gr_fs_join(ctx->outdir, CSV_FILE)) ||
        !(svg_path = gr_fs_join(ctx->outdir, SVG_FILE))) {
        rc = gr_seterr(GR_ENOMEM, "nbody: out of memory");
        goto done;
    }
    if ((rc = gr_fs_write_atomic(csv_path, rs.csv.data, rs.csv.len, 0644))) goto done;
    char title[128];
    if (rl)
        snprintf(title, sizeof title, "%s, %s, RL policy", ic_name, integ_name);
    else
        snprintf(title, sizeof title, "%s, %s, mu = %g", ic_name, integ_name, mu);
    if ((rc = write_plot(svg_path, &orb, &rs, rl, title))) goto done;

    /* metrics */
    uint64_t steps = gr_nbody_steps(nb);
    gr_buf_puts(&mb, "{\"ic\":");
    gr_buf_json_str(&mb, ic_name, strlen(ic_name));
    if (!strcmp(ic_name, "random3")) {
        int64_t seed;
        gr_op_int(ctx, "seed", 0, &seed);
        gr_buf_printf(&mb, ",\"seed\":%lld", (long long)seed);
    }
    gr_buf_printf(&mb, ",\"bodies\":%zu,\"integrator\":\"%s\",\"policy\":\"%s\"", n, integ_name,
                  policy);
    double log_mu_sum = 0;
    for (size_t i = 0; i < rs.nrows; i++) log_mu_sum += log10(rs.rows[i].mu);
    if (!rl) {
        gr_buf_puts(&mb, ",\"mu\":");
        gr_buf_json_num(&mb, mu);
    }
    gr_buf_puts(&mb, ",\"mu_geomean\":");
    gr_buf_json_num(&mb, rs.nrows ? pow(10, log_mu_sum / rs.nrows) : mu);
    gr_buf_puts(&mb, ",\"chunk\":");
    gr_buf_json_num(&mb, chunk);
    gr_buf_printf(&mb, ",\"chunks\":%d,\"t\":", res.chunks);
    gr_buf_json_num(&mb, gr_nbody_time(nb));
    gr_buf_puts(&mb, ",\"e0\":");
    gr_buf_json_num(&mb, res.e0);
    gr_buf_puts(&mb, ",\"energy_error_final\":");
    gr_buf_json_num(&mb, res.de_final);
    gr_buf_puts(&mb, ",\"energy_error_max\":");
    gr_buf_json_num(&mb, res.de_max);
    gr_buf_printf(&mb,
                  ",\"steps\":%llu,\"force_evals\":%llu,\"wall_s\":", (unsigned long long)steps,
                  (unsigned long long)gr_nbody_force_evals(nb));
    gr_buf_json_num(&mb, wall);
    gr_buf_puts(&mb, ",\"steps_per_s\":");
    gr_buf_json_num(&mb, wall > 0 ? steps / wall : 0);
    gr_buf_printf(&mb, ",\"status\":\"%s\"", status);
    if (rl) {
        int na;
        const double *acts = gr_nbrl_policy_actions(pol, &na);
        gr_buf_puts(&mb, ",\"actions\":{");
        for (int a = 0; a < na; a++)
            gr_buf_printf(&mb, "%s\"%.3g\":%llu", a ? "," : "", acts[a],
                          (unsigned long long)res.action_count[a]);
        gr_buf_putc(&mb, '}');
    }
    gr_buf_puts(&mb, ",\"final_state\":{\"masses\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) gr_buf_putc(&mb, ',');
        gr_buf_json_num(&mb, gr_nbody_masses(nb)[i]);
    }
    gr_buf_puts(&mb, "],\"positions\":");
    json_vec3s(&mb, gr_nbody_positions(nb), n);
    gr_buf_puts(&mb, ",\"velocities\":");
    json_vec3s(&mb, gr_nbody_velocities(nb), n);
    gr_buf_puts(&mb, "}}");
    if (mb.oom) {
        rc = gr_seterr(GR_ENOMEM, "nbody: out of memory");
        goto done;
    }
    rc = gr_op_set_metrics(ctx, mb.data);
done:
    gr_nbody_destroy(&nb);
    gr_nbrl_policy_destroy(&pol);
    gr_buf_free(&rs.csv);
    free(rs.rows);
    free(orb.x);
    free(orb.y);
    gr_buf_free(&mb);
    free(csv_path);
    free(svg_path);
    return rc;
}

const gr_op gr_op_nbody = {
    .name = "nbody",
    .version = 1,
    .summary = "N-body integration (Hermite, mu or Aarseth step) with a fixed or RL-chosen mu",
    .params = nbody_params,
    .run = nbody_run,
};
