/* gr_nbody: gravitational N-body systems (G = 1) integrated with a
 * shared-step 4th-order Hermite scheme whose step follows the mu criterion
 * or Aarseth's criterion; conserved quantities for checking the results. */
#include "gr_nbody.h"
#include "gr_err.h"
#include "gr_rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GM_SUN_SI      1.32712440018e20 /* m^3 s^-2 */
#define AU_SI          1.495978707e11   /* m */
#define YEAR_SI        (365.25 * 86400.0)
#define RL_TOTAL_MASS  3.0  /* solar masses in the RL unit system */
#define CANCEL_EVERY   4096 /* steps between polls of the cancel flag */
#define AARSETH_GROWTH 2.0  /* largest factor between consecutive full steps */
/* A step cut at t_end to below this fraction of the planned one is too short
 * to refit the acceleration derivatives (cancellation); the old fit is kept. */
#define AARSETH_REFIT 1e-3

/* Arrays are [n][3] unless noted; a and j hold the acceleration and jerk at
 * (x, v); xp/vp/a1/j1 are the trial state of the step being taken and swap
 * with x/v/a/j when it is accepted. s2/s3 are the Aarseth estimates of the
 * second and third derivative of the acceleration at time t_fit. */
struct gr_nbody {
    size_t n;
    double t;
    double *m; /* [n] */
    double *x, *v, *a, *j;
    double *xp, *vp, *a1, *j1;
    double *s2, *s3;
    double t_fit, dt_prev;
    int have_fit;
    gr_nb_integrator kind;
    uint64_t steps, fevals;
    volatile int *cancel;
    gr_nbody_observer observer;
    void *observer_ud;
    double *block; /* all the arrays above */
};

double gr_nbody_kms_per_unit(void)
{
    return sqrt(RL_TOTAL_MASS * GM_SUN_SI / AU_SI) / 1000.0;
}

double gr_nbody_years_per_unit(void)
{
    return AU_SI / (gr_nbody_kms_per_unit() * 1000.0) / YEAR_SI;
}

double gr_nbody_default_chunk(void)
{
    return 0.1 / gr_nbody_years_per_unit();
}

/* Acceleration and jerk of every body for positions x and velocities v:
 * a_i = sum_j m_j r_ij / r^3, j_i = sum_j m_j [v_ij / r^3 - 3 (r_ij.v_ij) r_ij / r^5]
 * with r_ij = x_j - x_i, v_ij = v_j - v_i. Each pair is visited once. */
static void force(gr_nbody *nb, const double *x, const double *v, double *a, double *j)
{
    size_t n = nb->n;
    const double *m = nb->m;
    memset(a, 0, 3 * n * sizeof *a);
    memset(j, 0, 3 * n * sizeof *j);
    for (size_t p = 0; p < n; p++) {
        for (size_t q = p + 1; q < n; q++) {
            double dx[3], dv[3];
            for (int k = 0; k < 3; k++) {
                dx[k] = x[3 * q + k] - x[3 * p + k];
                dv[k] = v[3 * q + k] - v[3 * p + k];
            }
            double r2 = dx[0] * dx[0] + dx[1] * dx[1] + dx[2] * dx[2];
            double rinv2 = 1.0 / r2;
            double rinv3 = rinv2 / sqrt(r2);
            double rv3 = 3.0 * (dx[0] * dv[0] + dx[1] * dv[1] + dx[2] * dv[2]) * rinv2;
            for (int k = 0; k < 3; k++) {
                double ak = dx[k] * rinv3;
                double jk = (dv[k] - rv3 * dx[k]) * rinv3;
                a[3 * p + k] += m[q] * ak;
                a[3 * q + k] -= m[p] * ak;
                j[3 * p + k] += m[q] * jk;
                j[3 * q + k] -= m[p] * jk;
            }
        }
    }
    nb->fevals++;
}

static gr_nbody *alloc_nbody(size_t n)
{
    gr_nbody *nb = calloc(1, sizeof *nb);
    if (!nb) return NULL;
    /* n masses + 10 arrays of 3n */
    nb->block = calloc(31 * n, sizeof *nb->block);
    if (!nb->block) {
        free(nb);
        return NULL;
    }
    nb->n = n;
    double *p = nb->block;
    nb->m = p, p += n;
    double **arrs[] = {&nb->x,  &nb->v,  &nb->a,  &nb->j,  &nb->xp,
                       &nb->vp, &nb->a1, &nb->j1, &nb->s2, &nb->s3};
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++) *arrs[i] = p, p += 3 * n;
    return nb;
}

gr_nbody *gr_nbody_new(size_t n, const double *m, const double *x, const double *v)
{
    if (n < 2 || n > GR_NBODY_MAX) {
        gr_seterr(GR_EINVAL, "nbody: masses: %zu bodies, need 2..%d", n, GR_NBODY_MAX);
        return NULL;
    }
    if (!m || !x || !v) {
        gr_seterr(GR_EINVAL, "nbody: %s missing", !m ? "masses" : !x ? "positions" : "velocities");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(m[i]) || !(m[i] > 0)) {
            gr_seterr(GR_EINVAL, "nbody: masses[%zu] = %g: every mass must be finite and > 0", i,
                      m[i]);
            return NULL;
        }
        for (int k = 0; k < 3; k++) {
            if (!isfinite(x[3 * i + k])) {
                gr_seterr(GR_EINVAL, "nbody: positions[%zu][%d] is not finite", i, k);
                return NULL;
            }
            if (!isfinite(v[3 * i + k])) {
                gr_seterr(GR_EINVAL, "nbody: velocities[%zu][%d] is not finite", i, k);
                return NULL;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        for (size_t q = i + 1; q < n; q++)
            if (x[3 * i] == x[3 * q] && x[3 * i + 1] == x[3 * q + 1] &&
                x[3 * i + 2] == x[3 * q + 2]) {
                gr_seterr(GR_EINVAL,
                          "nbody: positions: bodies %zu and %zu coincide at (%g, %g, %g); "
                          "bodies must be at distinct positions",
                          i, q, x[3 * i], x[3 * i + 1], x[3 * i + 2]);
                return NULL;
            }
    gr_nbody *nb = alloc_nbody(n);
    if (!nb) {
        gr_seterr(GR_ENOMEM, "nbody: out of memory for %zu bodies", n);
        return NULL;
    }
    memcpy(nb->m, m, n * sizeof *m);
    memcpy(nb->x, x, 3 * n * sizeof *x);
    memcpy(nb->v, v, 3 * n * sizeof *v);
    force(nb, nb->x, nb->v, nb->a, nb->j);
    /* The first evaluation is part of setting up, not of integrating. */
    nb->fevals = 0;
    return nb;
}

gr_nbody *gr_nbody_pythagorean(void)
{
    static const double m[3] = {3, 4, 5};
    static const double x[9] = {1, 3, 0, -2, -1, 0, 1, -1, 0};
    static const double v[9] = {0};
    return gr_nbody_new(3, m, x, v);
}

gr_nbody *gr_nbody_random3(uint64_t seed)
{
    gr_rng_stream rs;
    gr_rng_stream_init(&rs, seed, "nbody.random3");
    double u[4];
    for (int i = 0; i < 4; i++) u[i] = gr_rng_next_double(&rs);
    double m[3] = {1.0 / 3, 1.0 / 3, 1.0 / 3};
    double x[9] = {0, 0, 0, 5 + 15 * u[0], 10 * u[1], 0, -10 + 10 * u[2], 5 + 15 * u[3], 0};
    double kms = gr_nbody_kms_per_unit();
    double v[9] = {0, 10 / kms, 0, -10 / kms, 0, 0, 0, 0, 0};
    /* centre-of-mass frame (equal masses: subtract the mean) */
    for (int k = 0; k < 3; k++) {
        double cx = (x[k] + x[3 + k] + x[6 + k]) / 3, cv = (v[k] + v[3 + k] + v[6 + k]) / 3;
        for (int i = 0; i < 3; i++) x[3 * i + k] -= cx, v[3 * i + k] -= cv;
    }
    return gr_nbody_new(3, m, x, v);
}

gr_nbody *gr_nbody_copy(const gr_nbody *src)
{
    gr_nbody *nb = alloc_nbody(src->n);
    if (!nb) {
        gr_seterr(GR_ENOMEM, "nbody: out of memory for %zu bodies", src->n);
        return NULL;
    }
    double *block = nb->block;
    ptrdiff_t shift = block - src->block;
    *nb = *src;
    nb->block = block;
    nb->cancel = NULL;
    nb->observer = NULL;
    nb->observer_ud = NULL;
    memcpy(block, src->block, 31 * src->n * sizeof *block);
    double **arrs[] = {&nb->m,  &nb->x,  &nb->v,  &nb->a,  &nb->j, &nb->xp,
                       &nb->vp, &nb->a1, &nb->j1, &nb->s2, &nb->s3};
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++) *arrs[i] += shift;
    return nb;
}

void gr_nbody_destroy(gr_nbody **pnb)
{
    if (!pnb || !*pnb) return;
    free((*pnb)->block);
    free(*pnb);
    *pnb = NULL;
}

int gr_nbody_set_integrator(gr_nbody *nb, gr_nb_integrator kind)
{
    if (kind != GR_NB_HERMITE && kind != GR_NB_AARSETH)
        return gr_seterr(GR_EINVAL, "nbody: integrator %d unknown", (int)kind);
    if (kind != nb->kind) nb->have_fit = 0;
    nb->kind = kind;
    return 0;
}

void gr_nbody_set_cancel(gr_nbody *nb, volatile int *flag)
{
    nb->cancel = flag;
}

void gr_nbody_set_observer(gr_nbody *nb, gr_nbody_observer fn, void *ud)
{
    nb->observer = fn;
    nb->observer_ud = ud;
}

/* mu criterion: mu * min over pairs of min(r/v, sqrt(r^3/(m_i+m_j))). */
static double step_mu(const gr_nbody *nb, double mu)
{
    const double *x = nb->x, *v = nb->v, *m = nb->m;
    double tau = INFINITY;
    for (size_t p = 0; p < nb->n; p++)
        for (size_t q = p + 1; q < nb->n; q++) {
            double r2 = 0, v2 = 0;
            for (int k = 0; k < 3; k++) {
                double dx = x[3 * q + k] - x[3 * p + k], dv = v[3 * q + k] - v[3 * p + k];
                r2 += dx * dx;
                v2 += dv * dv;
            }
            double r = sqrt(r2);
            double tff = sqrt(r2 * r / (m[p] + m[q]));
            if (tff < tau) tau = tff;
            if (v2 > 0 && r / sqrt(v2) < tau) tau = r / sqrt(v2);
        }
    return mu * tau;
}

static double norm3(const double *u)
{
    return sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
}

/* Aarseth criterion from a, a' at t and a'', a''' extrapolated from t_fit. */
static double step_aarseth(const gr_nbody *nb, double mu)
{
    if (!nb->have_fit) return step_mu(nb, mu);
    double h = nb->t - nb->t_fit, dt = INFINITY;
    for (size_t i = 0; i < nb->n; i++) {
        double s2[3];
        for (int k = 0; k < 3; k++) s2[k] = nb->s2[3 * i + k] + h * nb->s3[3 * i + k];
        double a = norm3(nb->a + 3 * i), j = norm3(nb->j + 3 * i);
        double sn = norm3(s2), cn = norm3(nb->s3 + 3 * i);
        double num = a * sn + j * j, den = j * cn + sn * sn;
        if (!(den > 0) || !(num > 0)) continue;
        double d = sqrt(mu * num / den);
        if (d < dt) dt = d;
    }
    if (!isfinite(dt)) return step_mu(nb, mu);
    if (nb->dt_prev > 0 && dt > AARSETH_GROWTH * nb->dt_prev) dt = AARSETH_GROWTH * nb->dt_prev;
    return dt;
}

double gr_nbody_timestep(const gr_nbody *nb, double mu)
{
    if (!isfinite(mu) || !(mu > 0)) return NAN;
    return nb->kind == GR_NB_AARSETH ? step_aarseth(nb, mu) : step_mu(nb, mu);
}

/* Fits a'' and a''' at the end of a step of length h from (a, a') at both
 * ends (the Hermite interpolation polynomial), for the Aarseth rule. */
static void fit_derivatives(gr_nbody *nb, double h)
{
    double h2 = h * h, h3 = h2 * h;
    for (size_t i = 0; i < 3 * nb->n; i++) {
        double a0 = nb->a[i], j0 = nb->j[i], a1 = nb->a1[i], j1 = nb->j1[i];
        double s2 = (-6 * (a0 - a1) - h * (4 * j0 + 2 * j1)) / h2;
        double s3 = (12 * (a0 - a1) + 6 * h * (j0 + j1)) / h3;
        nb->s2[i] = s2 + h * s3; /* moved to the end of the step */
        nb->s3[i] = s3;
    }
}

static void swap(double **p, double **q)
{
    double *t = *p;
    *p = *q;
    *q = t;
}

/* One predictor-evaluate-corrector Hermite step of length dt. Returns 0, or
 * GR_ESTATE with the state untouched when the result is not finite. */
static int hermite_step(gr_nbody *nb, double dt)
{
    size_t n3 = 3 * nb->n;
    double dt2 = dt * dt / 2, dt3 = dt * dt * dt / 6;
    for (size_t i = 0; i < n3; i++) {
        nb->xp[i] = nb->x[i] + nb->v[i] * dt + nb->a[i] * dt2 + nb->j[i] * dt3;
        nb->vp[i] = nb->v[i] + nb->a[i] * dt + nb->j[i] * dt2;
    }
    force(nb, nb->xp, nb->vp, nb->a1, nb->j1);
    double c2 = dt * dt / 12, check = 0;
    for (size_t i = 0; i < n3; i++) {
        double v1 = nb->v[i] + (nb->a[i] + nb->a1[i]) * dt / 2 + (nb->j[i] - nb->j1[i]) * c2;
        double x1 = nb->x[i] + (nb->v[i] + v1) * dt / 2 + (nb->a[i] - nb->a1[i]) * c2;
        nb->vp[i] = v1;
        nb->xp[i] = x1;
        check += x1 + v1 + nb->a1[i] + nb->j1[i];
    }
    if (!isfinite(check)) return GR_ESTATE;
    return 0;
}

int gr_nbody_evolve(gr_nbody *nb, double t_end, double mu)
{
    if (!isfinite(mu) || !(mu > 0))
        return gr_seterr(GR_EINVAL, "nbody: mu = %g: the time-step parameter must be > 0", mu);
    if (!isfinite(t_end) || t_end < nb->t)
        return gr_seterr(GR_EINVAL, "nbody: t_end = %g is before the current time %g", t_end,
                         nb->t);
    uint64_t since_poll = 0;
    while (nb->t < t_end) {
        if (++since_poll >= CANCEL_EVERY) {
            since_poll = 0;
            if (nb->cancel && *nb->cancel)
                return gr_seterr(GR_ECANCEL, "nbody: cancelled at t = %g", nb->t);
        }
        double dt = gr_nbody_timestep(nb, mu);
        if (!(dt > 0) || !isfinite(dt) || nb->t + dt == nb->t)
            return gr_seterr(GR_ESTATE,
                             "nbody: time step collapsed to %g at t = %.17g (a collision?)", dt,
                             nb->t);
        double planned = dt;
        int last = nb->t + dt >= t_end;
        if (last) dt = t_end - nb->t;
        if (hermite_step(nb, dt))
            return gr_seterr(GR_ESTATE, "nbody: state not finite after a step of %g at t = %.17g",
                             dt, nb->t);
        if (nb->kind == GR_NB_AARSETH && (!nb->have_fit || dt >= AARSETH_REFIT * planned)) {
            fit_derivatives(nb, dt);
            nb->have_fit = 1;
            nb->t_fit = last ? t_end : nb->t + dt;
        }
        nb->dt_prev = planned;
        swap(&nb->x, &nb->xp);
        swap(&nb->v, &nb->vp);
        swap(&nb->a, &nb->a1);
        swap(&nb->j, &nb->j1);
        nb->t = last ? t_end : nb->t + dt;
        nb->steps++;
        if (nb->observer) nb->observer(nb->observer_ud, nb);
    }
    return 0;
}

size_t gr_nbody_n(const gr_nbody *nb)
{
    return nb->n;
}

double gr_nbody_time(const gr_nbody *nb)
{
    return nb->t;
}

const double *gr_nbody_masses(const gr_nbody *nb)
{
    return nb->m;
}

const double *gr_nbody_positions(const gr_nbody *nb)
{
    return nb->x;
}

const double *gr_nbody_velocities(const gr_nbody *nb)
{
    return nb->v;
}

uint64_t gr_nbody_steps(const gr_nbody *nb)
{
    return nb->steps;
}

uint64_t gr_nbody_force_evals(const gr_nbody *nb)
{
    return nb->fevals;
}

double gr_nbody_energy(const gr_nbody *nb)
{
    const double *x = nb->x, *v = nb->v, *m = nb->m;
    double kin = 0, pot = 0;
    for (size_t p = 0; p < nb->n; p++) {
        kin += 0.5 * m[p] *
               (v[3 * p] * v[3 * p] + v[3 * p + 1] * v[3 * p + 1] + v[3 * p + 2] * v[3 * p + 2]);
        for (size_t q = p + 1; q < nb->n; q++) {
            double d[3] = {x[3 * q] - x[3 * p], x[3 * q + 1] - x[3 * p + 1],
                           x[3 * q + 2] - x[3 * p + 2]};
            pot -= m[p] * m[q] / norm3(d);
        }
    }
    return kin + pot;
}

void gr_nbody_momentum(const gr_nbody *nb, double p[3])
{
    p[0] = p[1] = p[2] = 0;
    for (size_t i = 0; i < nb->n; i++)
        for (int k = 0; k < 3; k++) p[k] += nb->m[i] * nb->v[3 * i + k];
}

void gr_nbody_angmom(const gr_nbody *nb, double l[3])
{
    l[0] = l[1] = l[2] = 0;
    for (size_t i = 0; i < nb->n; i++) {
        const double *x = nb->x + 3 * i, *v = nb->v + 3 * i;
        double m = nb->m[i];
        l[0] += m * (x[1] * v[2] - x[2] * v[1]);
        l[1] += m * (x[2] * v[0] - x[0] * v[2]);
        l[2] += m * (x[0] * v[1] - x[1] * v[0]);
    }
}

void gr_nbody_com(const gr_nbody *nb, double x[3], double v[3])
{
    double mt = 0;
    for (int k = 0; k < 3; k++) x[k] = v[k] = 0;
    for (size_t i = 0; i < nb->n; i++) {
        mt += nb->m[i];
        for (int k = 0; k < 3; k++) {
            x[k] += nb->m[i] * nb->x[3 * i + k];
            v[k] += nb->m[i] * nb->v[3 * i + k];
        }
    }
    for (int k = 0; k < 3; k++) x[k] /= mt, v[k] /= mt;
}
