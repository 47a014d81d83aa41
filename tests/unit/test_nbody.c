/* Tests for gr_nbody against physics: the Pythagorean problem's exact E0 =
 * -769/60, conservation of linear momentum to round-off, energy and angular
 * momentum errors falling as mu^4 (4th-order scheme), the known outcome of
 * the Pythagorean problem (the mass-3 body escapes, masses 4 and 5 form a
 * binary), steps landing exactly on t_end, determinism, the paper's random
 * initial conditions, and bad input. */
#include "gr_err.h"
#include "gr_nbody.h"
#include "gr_test.h"

/* Least-squares slope of log10(y) against log10(x). */
static double loglog_slope(const double *x, const double *y, int n)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        double lx = log10(x[i]), ly = log10(y[i]);
        sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
    }
    return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

static void test_pythagorean_e0(void)
{
    gr_nbody *nb = gr_nbody_pythagorean();
    CHECK(nb != NULL);
    double e0 = gr_nbody_energy(nb);
    printf("Pythagorean E0 = %.17g, -769/60 = %.17g, difference %.3g\n", e0, -769.0 / 60,
           e0 + 769.0 / 60);
    CHECK_NEAR(e0, -769.0 / 60, 4 * 2.2e-16 * 769.0 / 60);
    double x[3], v[3], p[3], l[3];
    gr_nbody_com(nb, x, v);
    gr_nbody_momentum(nb, p);
    gr_nbody_angmom(nb, l);
    for (int k = 0; k < 3; k++) {
        CHECK(x[k] == 0 && v[k] == 0 && p[k] == 0 && l[k] == 0); /* exactly, by construction */
    }
    CHECK_EQ_INT(gr_nbody_n(nb), 3);
    CHECK(gr_nbody_masses(nb)[0] == 3 && gr_nbody_masses(nb)[2] == 5);
    gr_nbody_destroy(&nb);
    CHECK(nb == NULL);
}

/* Integrates the Pythagorean problem to t_end in 100 equal chunks and
 * returns the largest |dE/E0|, |dP| and |dL| seen at the chunk ends. */
static void pyth_errors(gr_nb_integrator kind, double mu, double t_end, double *de, double *dp,
                        double *dl, uint64_t *steps)
{
    gr_nbody *nb = gr_nbody_pythagorean();
    gr_nbody_set_integrator(nb, kind);
    double e0 = gr_nbody_energy(nb), p0[3], l0[3];
    gr_nbody_momentum(nb, p0);
    gr_nbody_angmom(nb, l0);
    *de = *dp = *dl = 0;
    for (int c = 1; c <= 100; c++) {
        int rc = gr_nbody_evolve(nb, t_end * c / 100, mu);
        CHECK_MSG(rc == 0, "mu %g: %s", mu, gr_errmsg());
        double p[3], l[3];
        gr_nbody_momentum(nb, p);
        gr_nbody_angmom(nb, l);
        *de = fmax(*de, fabs((gr_nbody_energy(nb) - e0) / e0));
        for (int k = 0; k < 3; k++) {
            *dp = fmax(*dp, fabs(p[k] - p0[k]));
            *dl = fmax(*dl, fabs(l[k] - l0[k]));
        }
    }
    *steps = gr_nbody_steps(nb);
    CHECK(gr_nbody_force_evals(nb) == *steps); /* one evaluation per Hermite step */
    gr_nbody_destroy(&nb);
}

static void test_conservation_and_order(void)
{
    /* mu from 0.05 down to 0.004: above, the error is not yet asymptotic;
     * below, round-off starts to show in the close encounter near t = 1.9 */
    double mus[] = {0.05, 0.035, 0.025, 0.018, 0.0125, 0.009, 0.006, 0.004};
    enum { N = sizeof mus / sizeof mus[0] };
    double de[N], dl[N];
    uint64_t steps[N];
    for (int i = 0; i < N; i++) {
        double dp;
        pyth_errors(GR_NB_HERMITE, mus[i], 2.0, &de[i], &dp, &dl[i], &steps[i]);
        /* pairwise antisymmetric forces and a shared step: P is exact up to
         * round-off (|p| ~ m |v| ~ 5 * 10 here) */
        CHECK_MSG(dp < 1e-12, "mu %g: |dP| = %.3g", mus[i], dp);
        printf("  hermite mu %-7g steps %6llu  max|dE/E0| %.3e  max|dL| %.3e  max|dP| %.1e\n",
               mus[i], (unsigned long long)steps[i], de[i], dl[i], dp);
        if (i) CHECK(de[i] < de[i - 1] && steps[i] > steps[i - 1]);
    }
    double se = loglog_slope(mus, de, N), sl = loglog_slope(mus, dl, N);
    double ss = loglog_slope(
        mus,
        (double[]){steps[0], steps[1], steps[2], steps[3], steps[4], steps[5], steps[6], steps[7]},
        N);
    printf("log-log slopes: energy error %.2f, angular momentum error %.2f, steps %.2f\n", se, sl,
           ss);
    CHECK_MSG(fabs(se - 4) < 0.5, "energy error slope %.2f, want about 4", se);
    /* The Hermite scheme conserves angular momentum only to its truncation
     * error, of the same order as the energy's. */
    CHECK_MSG(fabs(sl - 4) < 0.7, "angular momentum error slope %.2f, want about 4", sl);
    CHECK_MSG(fabs(ss + 1) < 0.15, "steps slope %.2f, want about -1", ss);
    /* at small mu the truncation error of L is at round-off level */
    double dp, de3, dl3;
    uint64_t st3;
    pyth_errors(GR_NB_HERMITE, 1e-3, 2.0, &de3, &dp, &dl3, &st3);
    printf("  hermite mu 0.001   steps %6llu  max|dE/E0| %.3e  max|dL| %.3e\n",
           (unsigned long long)st3, de3, dl3);
    CHECK(dl3 < 1e-11 && dp < 1e-12);
}

static void test_aarseth_variant(void)
{
    /* Aarseth's criterion dt = sqrt(mu * ...): the error falls as
     * (dt)^4 ~ mu^2 */
    double mus[] = {0.05, 0.025, 0.0125, 0.006, 0.003};
    enum { N = sizeof mus / sizeof mus[0] };
    double de[N];
    uint64_t steps[N];
    for (int i = 0; i < N; i++) {
        double dp, dl;
        pyth_errors(GR_NB_AARSETH, mus[i], 5.0, &de[i], &dp, &dl, &steps[i]);
        CHECK_MSG(dp < 1e-12, "aarseth mu %g: |dP| = %.3g", mus[i], dp);
        printf("  aarseth mu %-7g steps %6llu  max|dE/E0| %.3e\n", mus[i],
               (unsigned long long)steps[i], de[i]);
    }
    double se = loglog_slope(mus, de, N);
    printf("aarseth: energy error slope %.2f in mu (expected about 2)\n", se);
    CHECK_MSG(fabs(se - 2) < 0.6, "aarseth slope %.2f", se);
    CHECK(de[N - 1] < 1e-5);
}

/* Two-body energy of bodies i and j in their centre-of-mass frame. */
static double pair_energy(const gr_nbody *nb, int i, int j)
{
    const double *m = gr_nbody_masses(nb), *x = gr_nbody_positions(nb),
                 *v = gr_nbody_velocities(nb);
    double dx = 0, dv = 0;
    for (int k = 0; k < 3; k++) {
        double a = x[3 * j + k] - x[3 * i + k], b = v[3 * j + k] - v[3 * i + k];
        dx += a * a, dv += b * b;
    }
    double mu = m[i] * m[j] / (m[i] + m[j]);
    return 0.5 * mu * dv - m[i] * m[j] / sqrt(dx);
}

/* Energy of body 0 relative to the centre of mass of bodies 1 and 2 (the
 * binary as a point mass), and their distance. */
static double escaper_energy(const gr_nbody *nb, double *dist)
{
    const double *m = gr_nbody_masses(nb), *x = gr_nbody_positions(nb),
                 *v = gr_nbody_velocities(nb);
    double mb = m[1] + m[2], r2 = 0, v2 = 0;
    for (int k = 0; k < 3; k++) {
        double cx = (m[1] * x[3 + k] + m[2] * x[6 + k]) / mb;
        double cv = (m[1] * v[3 + k] + m[2] * v[6 + k]) / mb;
        r2 += (x[k] - cx) * (x[k] - cx);
        v2 += (v[k] - cv) * (v[k] - cv);
    }
    *dist = sqrt(r2);
    double mu = m[0] * mb / (m[0] + mb);
    return 0.5 * mu * v2 - m[0] * mb / *dist;
}

static void test_pythagorean_outcome(void)
{
    gr_nbody *nb = gr_nbody_pythagorean();
    double e0 = gr_nbody_energy(nb), mu = 2e-3;
    CHECK(gr_nbody_evolve(nb, 90, mu) == 0);
    double d90, d100;
    escaper_energy(nb, &d90);
    CHECK(gr_nbody_evolve(nb, 100, mu) == 0);
    CHECK(gr_nbody_time(nb) == 100);
    double err = fabs((gr_nbody_energy(nb) - e0) / e0);
    double eb = pair_energy(nb, 1, 2), ee = escaper_energy(nb, &d100);
    printf("Pythagorean at t=100 (mu %g, %llu steps): |dE/E0| %.2e, binary (4,5) energy %.4f, "
           "body 0 (mass 3) energy %.4f at distance %.1f (%.1f at t=90)\n",
           mu, (unsigned long long)gr_nbody_steps(nb), err, eb, ee, d100, d90);
    CHECK(err < 1e-6);
    CHECK(eb < 0);                 /* masses 4 and 5 are bound */
    CHECK(ee > 0);                 /* the mass-3 body is unbound from them */
    CHECK(d100 > d90 && d90 > 10); /* and flying away */
    /* the other pairs are not bound */
    CHECK(pair_energy(nb, 0, 1) > 0 && pair_energy(nb, 0, 2) > 0);
    gr_nbody_destroy(&nb);
}

static void test_exact_end_and_determinism(void)
{
    gr_nbody *a = gr_nbody_pythagorean(), *b = gr_nbody_pythagorean();
    double chunk = gr_nbody_default_chunk();
    CHECK_NEAR(chunk, 1.088, 0.001);
    CHECK_NEAR(gr_nbody_kms_per_unit(), 51.6, 0.02);
    CHECK_NEAR(gr_nbody_years_per_unit(), 0.09188, 0.00002);
    for (int c = 1; c <= 3; c++) {
        CHECK(gr_nbody_evolve(a, c * chunk, 0.01) == 0);
        CHECK(gr_nbody_time(a) == c * chunk); /* exactly: the last step lands on t_end */
    }
    CHECK(gr_nbody_evolve(b, 3 * chunk, 0.01) == 0);
    /* same steps either way except for the two chunk-boundary cuts */
    CHECK(gr_nbody_steps(a) >= gr_nbody_steps(b));
    gr_nbody *c = gr_nbody_copy(a);
    CHECK(gr_nbody_evolve(a, 5, 0.02) == 0);
    CHECK(gr_nbody_evolve(c, 5, 0.02) == 0);
    CHECK(!memcmp(gr_nbody_positions(a), gr_nbody_positions(c), 9 * sizeof(double)));
    CHECK(!memcmp(gr_nbody_velocities(a), gr_nbody_velocities(c), 9 * sizeof(double)));
    CHECK(gr_nbody_steps(a) == gr_nbody_steps(c));
    CHECK(gr_nbody_evolve(a, 5, 0.02) == 0); /* t_end == t: nothing to do */
    CHECK(gr_nbody_evolve(a, 4, 0.02) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "before the current time");
    gr_nbody_destroy(&a);
    gr_nbody_destroy(&b);
    gr_nbody_destroy(&c);
}

static void test_random3(void)
{
    double kms = gr_nbody_kms_per_unit();
    for (uint64_t seed = 0; seed < 20; seed++) {
        gr_nbody *nb = gr_nbody_random3(seed);
        CHECK(nb != NULL);
        const double *x = gr_nbody_positions(nb), *v = gr_nbody_velocities(nb);
        /* differences survive the centre-of-mass shift */
        double x1 = x[3] - x[0], y1 = x[4] - x[1], x2 = x[6] - x[0], y2 = x[7] - x[1];
        CHECK(x1 >= 5 && x1 <= 20 && y1 >= 0 && y1 <= 10);
        CHECK(x2 >= -10 && x2 <= 0 && y2 >= 5 && y2 <= 20);
        CHECK_NEAR((v[3] - v[0]) * kms, -10, 1e-12);
        CHECK_NEAR((v[4] - v[1]) * kms, -10, 1e-12);
        CHECK_NEAR((v[6] - v[0]) * kms, 0, 1e-12);
        CHECK_NEAR((v[7] - v[1]) * kms, -10, 1e-12);
        double cx[3], cv[3];
        gr_nbody_com(nb, cx, cv);
        for (int k = 0; k < 3; k++) CHECK(fabs(cx[k]) < 1e-14 && fabs(cv[k]) < 1e-16);
        CHECK(x[2] == 0 && x[5] == 0 && x[8] == 0); /* planar */
        CHECK(gr_nbody_energy(nb) < 0);             /* these triples are bound */
        gr_nbody *again = gr_nbody_random3(seed), *other = gr_nbody_random3(seed + 1);
        CHECK(!memcmp(x, gr_nbody_positions(again), 9 * sizeof(double)));
        CHECK(memcmp(x, gr_nbody_positions(other), 9 * sizeof(double)) != 0);
        gr_nbody_destroy(&again);
        gr_nbody_destroy(&other);
        gr_nbody_destroy(&nb);
    }
}

static void test_bad_input(void)
{
    double m[3] = {1, 0, 1}, x[9] = {0, 0, 0, 1, 0, 0, 0, 1, 0}, v[9] = {0};
    CHECK(gr_nbody_new(3, m, x, v) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "masses[1] = 0");
    CHECK(gr_errcode() == GR_EINVAL);
    m[1] = -2;
    CHECK(gr_nbody_new(3, m, x, v) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "masses[1] = -2");
    m[1] = NAN;
    CHECK(gr_nbody_new(3, m, x, v) == NULL);
    m[1] = 1;
    x[7] = 0; /* body 2 onto body 0 */
    CHECK(gr_nbody_new(3, m, x, v) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "bodies 0 and 2 coincide");
    x[7] = INFINITY;
    CHECK(gr_nbody_new(3, m, x, v) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "positions[2][1]");
    x[7] = 1;
    v[4] = NAN;
    CHECK(gr_nbody_new(3, m, x, v) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "velocities[1][1]");
    v[4] = 0;
    CHECK(gr_nbody_new(1, m, x, v) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "1 bodies");
    gr_nbody *nb = gr_nbody_new(3, m, x, v);
    CHECK(nb != NULL);
    CHECK(gr_nbody_evolve(nb, 1, 0) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "mu = 0");
    CHECK(gr_nbody_evolve(nb, 1, -0.1) == GR_EINVAL);
    CHECK(gr_nbody_evolve(nb, 1, NAN) == GR_EINVAL);
    CHECK(isnan(gr_nbody_timestep(nb, 0)));
    CHECK(gr_nbody_set_integrator(nb, (gr_nb_integrator)7) == GR_EINVAL);
    CHECK(gr_nbody_time(nb) == 0 && gr_nbody_steps(nb) == 0);
    gr_nbody_destroy(&nb);

    /* a head-on collision from rest: the step collapses, reported, state kept */
    double m2[2] = {1, 1}, x2[6] = {-0.5, 0, 0, 0.5, 0, 0}, v2[6] = {0};
    nb = gr_nbody_new(2, m2, x2, v2);
    int rc = gr_nbody_evolve(nb, 10, 0.01);
    CHECK(rc == GR_ESTATE);
    CHECK_CONTAINS(gr_errmsg(), "t = ");
    /* free fall from rest at separation 1 with total mass 2: t = pi/4 */
    CHECK_NEAR(gr_nbody_time(nb), M_PI / 4, 1e-3);
    CHECK(isfinite(gr_nbody_positions(nb)[0]));
    gr_nbody_destroy(&nb);

    /* cancellation */
    volatile int stop = 1;
    nb = gr_nbody_pythagorean();
    gr_nbody_set_cancel(nb, &stop);
    CHECK(gr_nbody_evolve(nb, 50, 1e-3) == GR_ECANCEL);
    CHECK(gr_nbody_time(nb) < 50);
    gr_nbody_destroy(&nb);
}

int main(void)
{
    RUN(test_pythagorean_e0);
    RUN(test_conservation_and_order);
    RUN(test_aarseth_variant);
    RUN(test_pythagorean_outcome);
    RUN(test_exact_end_and_determinism);
    RUN(test_random3);
    RUN(test_bad_input);
    TEST_MAIN_END();
}
