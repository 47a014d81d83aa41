/* Tests for gr_nbody against physics: the Pythagorean problem's exact E0 =
 * -769/60, conservation of linear momentum to round-off, energy and angular
 * momentum errors falling as mu^4 (4th-order scheme), the known outcome of
 * the Pythagorean problem (the mass-3 body escapes, masses 4 and 5 form a
 * binary), steps landing exactly on t_end, determinism, the paper's random
 * initial conditions, and bad input; then the nbody and nbody-train ops run
 * in-process: outputs, metrics, a trained policy driving nbody, and policy
 * artifacts of the wrong shape. */
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_json.h"
#include "gr_nbody.h"
#include "gr_op.h"
#include "gr_test.h"
#include "nbody/gr_nbrl.h"

#include <dirent.h>

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

/* ---- the ops, run in-process ---- */

/* Runs op with params (JSON text) writing into outdir; returns its code and
 * leaves the metrics text in *metrics (caller frees). */
static int run_op(const char *name, const char *params, const char *outdir, char **metrics)
{
    const gr_op *op = gr_op_find(name);
    CHECK(op != NULL);
    *metrics = NULL;
    gr_json *p = gr_json_parse(params, strlen(params), "params");
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    if (!op || !p) return GR_EINVAL;
    int rc = gr_op_check_params(op, p);
    if (!rc) {
        volatile int cancel = 0;
        gr_op_ctx ctx = {.op = op,
                         .params = p,
                         .outdir = outdir,
                         .workdir = outdir,
                         .threads = 1,
                         .cancel = &cancel};
        rc = op->run(&ctx);
        *metrics = gr_buf_take(&ctx.metrics);
        gr_buf_free(&ctx.metrics);
    }
    gr_json_free(p);
    return rc;
}

static char *scratch(const char *tag)
{
    char *d = NULL;
    const char *root = getenv("TMPDIR");
    CHECK(gr_fs_mkdtemp(root && *root ? root : "/tmp", tag, &d) == 0);
    return d;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static char *slurp(const char *dir, const char *name, size_t *len)
{
    char *path = gr_fs_join(dir, name), *data = NULL;
    size_t n = 0;
    if (gr_fs_read_file(path, 1u << 26, &data, &n)) data = NULL;
    free(path);
    if (len) *len = n;
    return data;
}

static void put(const char *dir, const char *name, const char *data, size_t len)
{
    char *path = gr_fs_join(dir, name);
    CHECK(gr_fs_write_atomic(path, data, len, 0644) == 0);
    free(path);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

static void test_op_fixed(void)
{
    char *out = scratch("nbody-op-"), *m = NULL;
    int rc =
        run_op("nbody", "{\"ic\":\"pythagorean\",\"mu\":0.01,\"t_end\":5,\"chunk\":1}", out, &m);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    gr_json *j = m ? gr_json_parse(m, strlen(m), "metrics") : NULL;
    CHECK(j != NULL);
    CHECK_NEAR(gr_json_get_num(j, "e0", 0), -769.0 / 60, 1e-13);
    CHECK(gr_json_get_num(j, "t", 0) == 5);
    CHECK_EQ_INT(gr_json_get_int(j, "chunks", 0), 5);
    double err = gr_json_get_num(j, "energy_error_final", -1);
    CHECK(err >= 0 && err < 1e-6 && gr_json_get_num(j, "energy_error_max", -1) >= err);
    CHECK(gr_json_get_int(j, "steps", 0) > 100);
    CHECK(gr_json_get_int(j, "steps", 0) == gr_json_get_int(j, "force_evals", -1));
    CHECK(!strcmp(gr_json_get_str(j, "status", ""), "ok"));
    const gr_json *fs = gr_json_get(j, "final_state");
    CHECK(fs && gr_json_get(fs, "positions") && gr_json_get(fs, "positions")->len == 3);
    /* the op integrates exactly as the library does, chunk by chunk */
    gr_nbody *nb = gr_nbody_pythagorean();
    for (int c = 1; c <= 5; c++) gr_nbody_evolve(nb, c, 0.01);
    CHECK(gr_json_get_int(j, "steps", 0) == (int64_t)gr_nbody_steps(nb));
    const gr_json *pos = gr_json_get(fs, "positions");
    CHECK(pos && pos->items[2]->items[1]->num == gr_nbody_positions(nb)[7]);
    gr_nbody_destroy(&nb);
    char *csv = slurp(out, "nbody.csv", NULL), *svg = slurp(out, "nbody.svg", NULL);
    CHECK(csv && count_lines(csv) == 6); /* header + 5 chunks */
    CHECK_CONTAINS(csv, "chunk,t,energy_error,abs_energy_error,mu,action,steps,x0,y0,z0");
    CHECK_CONTAINS(csv, "\n5,5,");
    CHECK(svg && !strncmp(svg, "<?xml", 5));
    CHECK_CONTAINS(svg, "</svg>");
    CHECK_CONTAINS(svg, "pythagorean, hermite, mu = 0.01");
    free(csv);
    free(svg);
    free(m);
    gr_json_free(j);
    gr_fs_rmrf(out);
    free(out);
}

/* Runs nbody with bad params: GR_EINVAL, the message names the parameter,
 * and nothing is written. */
static void expect_bad(const char *params, const char *want)
{
    char *out = scratch("nbody-bad-"), *m = NULL;
    int rc = run_op("nbody", params, out, &m);
    CHECK_MSG(rc == GR_EINVAL, "%s: rc %d", params, rc);
    CHECK_CONTAINS(gr_errmsg(), want);
    CHECK_EQ_INT(count_entries(out), 0);
    free(m);
    gr_fs_rmrf(out);
    free(out);
}

static void test_op_bad_input(void)
{
    expect_bad("{\"ic\":\"explicit\",\"masses\":[1,0],\"positions\":[[0,0],[1,0]],"
               "\"velocities\":[[0,0],[0,1]]}",
               "masses[1] = 0");
    expect_bad("{\"masses\":[1,-3],\"positions\":[[0,0],[1,0]],\"velocities\":[[0,0],[0,1]]}",
               "masses[1] = -3");
    expect_bad("{\"masses\":[1,2],\"positions\":[[1,2],[1,2,0]],\"velocities\":[[0,0],[0,1]]}",
               "bodies 0 and 1 coincide");
    expect_bad("{\"masses\":[1,2],\"positions\":[[1,2]],\"velocities\":[[0,0],[0,1]]}",
               "'positions' must be a list of 2");
    expect_bad("{\"masses\":[1,2],\"positions\":[[1,2],[3,4]],\"velocities\":[[0,0],[0,\"a\"]]}",
               "'velocities[1][1]' must be a number");
    expect_bad("{\"mu\":0}", "'mu' = 0");
    expect_bad("{\"mu\":-0.01}", "'mu' = -0.01");
    expect_bad("{\"policy\":\"rl\"}", "needs parameter 'model'");
    expect_bad("{\"policy\":\"fixed\",\"model\":\"/tmp\"}", "'model' is only used with policy rl");
    expect_bad("{\"policy\":\"greedy\"}", "'policy' = 'greedy'");
    expect_bad("{\"integrator\":\"leapfrog\"}", "'integrator' = 'leapfrog'");
    expect_bad("{\"ic\":\"random3\",\"seed\":-1}", "'seed' = -1");
    expect_bad("{\"ic\":\"plummer\"}", "'ic' = 'plummer'");
    expect_bad("{\"chunks\":0}", "'chunks' = 0");
    expect_bad("{\"chunk\":0}", "'chunk' = 0");
    expect_bad("{\"t_end\":5,\"chunks\":3}", "not both");
    expect_bad("{\"mu_fixed\":0.1}", "unknown parameter 'mu_fixed'");
    expect_bad("{\"mu\":\"small\"}", "'mu' must be a number");
}

static const char *tiny_train =
    "{\"episodes\":3,\"chunks\":4,\"hidden\":16,\"repeat\":2,\"batch\":8,\"replay\":64,"
    "\"seed\":5}";

static void test_op_train_and_rl(void)
{
    char *a = scratch("nbody-train-a-"), *b = scratch("nbody-train-b-"), *m = NULL;
    int rc = run_op("nbody-train", tiny_train, a, &m);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    gr_json *j = m ? gr_json_parse(m, strlen(m), "metrics") : NULL;
    CHECK(j && gr_json_get_int(j, "episodes", 0) == 3 &&
          gr_json_get_num(j, "episodes_per_s", 0) > 0);
    CHECK(j && gr_json_get_int(j, "env_steps", 0) >= 3);
    gr_json_free(j);
    free(m);
    CHECK_EQ_INT(count_entries(a), 4); /* config.json model.safetensors training.csv/svg */
    char *csv = slurp(a, "training.csv", NULL);
    CHECK(csv && count_lines(csv) == 4);
    free(csv);
    /* the same seed gives the same weights, byte for byte */
    CHECK(run_op("nbody-train", tiny_train, b, &m) == 0);
    free(m);
    size_t la, lb;
    char *wa = slurp(a, "model.safetensors", &la), *wb = slurp(b, "model.safetensors", &lb);
    CHECK(wa && wb && la == lb && !memcmp(wa, wb, la));
    free(wa);
    free(wb);

    /* the trained policy drives nbody */
    char params[512];
    snprintf(params, sizeof params,
             "{\"ic\":\"random3\",\"seed\":2,\"policy\":\"rl\",\"model\":\"%s\",\"chunks\":6}", a);
    char *out = scratch("nbody-rl-");
    CHECK_MSG(run_op("nbody", params, out, &m) == 0, "%s", gr_errmsg());
    j = m ? gr_json_parse(m, strlen(m), "metrics") : NULL;
    const gr_json *acts = gr_json_get(j, "actions");
    CHECK(acts && acts->type == GR_JSON_OBJ && acts->len == 10);
    int64_t total = 0;
    for (size_t i = 0; acts && i < acts->len; i++) total += acts->items[i]->i;
    CHECK_EQ_INT(total, 6);
    double g = gr_json_get_num(j, "mu_geomean", 0);
    CHECK(g >= 1e-4 * 0.999 && g <= 0.1 * 1.001);
    CHECK(!strcmp(gr_json_get_str(j, "policy", ""), "rl"));
    int64_t steps = gr_json_get_int(j, "steps", -1);
    gr_json_free(j);
    free(m);
    /* and deterministically so */
    gr_fs_rmrf(out);
    gr_fs_mkdirs(out, 0755, 0);
    CHECK(run_op("nbody", params, out, &m) == 0);
    j = m ? gr_json_parse(m, strlen(m), "metrics") : NULL;
    CHECK(gr_json_get_int(j, "steps", -2) == steps);
    gr_json_free(j);
    free(m);
    /* the policy also drives the Aarseth variant */
    snprintf(params, sizeof params,
             "{\"ic\":\"random3\",\"seed\":2,\"policy\":\"rl\",\"model\":\"%s\",\"chunks\":3,"
             "\"integrator\":\"aarseth\"}",
             a);
    gr_fs_rmrf(out);
    gr_fs_mkdirs(out, 0755, 0);
    CHECK_MSG(run_op("nbody", params, out, &m) == 0, "%s", gr_errmsg());
    free(m);

    /* bad training parameters */
    gr_fs_rmrf(out);
    gr_fs_mkdirs(out, 0755, 0);
    CHECK(run_op("nbody-train", "{\"episodes\":0}", out, &m) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "'episodes' = 0");
    free(m);
    CHECK(run_op("nbody-train", "{\"gamma\":2}", out, &m) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "gamma");
    free(m);
    CHECK(run_op("nbody-train", "{\"batch\":100,\"replay\":50}", out, &m) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "batch 100 larger than the replay buffer");
    free(m);
    CHECK_EQ_INT(count_entries(out), 0);

    gr_fs_rmrf(a);
    gr_fs_rmrf(b);
    gr_fs_rmrf(out);
    free(a);
    free(b);
    free(out);
}

/* Copies the artifact in src to a fresh directory with config.json text
 * edited (from -> to) and returns the load error message's match. */
static void expect_bad_policy(const char *src, const char *from, const char *to, const char *want)
{
    char *dir = scratch("nbody-policy-");
    size_t n;
    char *cfg = slurp(src, "config.json", &n), *w = slurp(src, "model.safetensors", &n);
    CHECK(cfg && w);
    char *hit = cfg ? strstr(cfg, from) : NULL;
    CHECK_MSG(hit != NULL, "'%s' not in config.json", from);
    if (hit) {
        gr_buf b = {0};
        gr_buf_append(&b, cfg, (size_t)(hit - cfg));
        gr_buf_puts(&b, to);
        gr_buf_puts(&b, hit + strlen(from));
        put(dir, "config.json", b.data, b.len);
        gr_buf_free(&b);
    }
    put(dir, "model.safetensors", w, n);
    gr_nbrl_policy *p = gr_nbrl_policy_load(dir);
    CHECK(p == NULL);
    CHECK(gr_errcode() == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), want);
    /* and the nbody op fails with that message, naming its parameter */
    char params[512], *m = NULL, *out = scratch("nbody-rl-bad-");
    snprintf(params, sizeof params, "{\"ic\":\"random3\",\"policy\":\"rl\",\"model\":\"%s\"}", dir);
    CHECK(run_op("nbody", params, out, &m) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "nbody: parameter 'model'");
    CHECK_CONTAINS(gr_errmsg(), want);
    CHECK_EQ_INT(count_entries(out), 0);
    free(m);
    free(cfg);
    free(w);
    gr_fs_rmrf(dir);
    gr_fs_rmrf(out);
    free(dir);
    free(out);
}

static void test_policy_wrong_shape(void)
{
    char *a = scratch("nbody-train-"), *m = NULL;
    CHECK(run_op("nbody-train", tiny_train, a, &m) == 0);
    free(m);
    gr_nbrl_policy *p = gr_nbrl_policy_load(a);
    CHECK_MSG(p != NULL, "%s", gr_errmsg());
    gr_nbrl_policy_destroy(&p);
    expect_bad_policy(a, "\"hidden\": 16", "\"hidden\": 17",
                      "tensor 'in.weight' has shape [16, 13] but the config's architecture needs "
                      "[17, 13]");
    expect_bad_policy(a, "\"repeat\": 2", "\"repeat\": 0",
                      "metadata 'architecture' = 'inputs=13,hidden=16,repeat=2,outputs=10' but "
                      "config.json describes 'inputs=13,hidden=16,repeat=0,outputs=10'");
    expect_bad_policy(a, "\"inputs\": 13", "\"inputs\": 12",
                      "'architecture.inputs' = 12 but the nbody state has 13 features");
    expect_bad_policy(a, "\"outputs\": 10", "\"outputs\": 9",
                      "10 'actions' but 'architecture.outputs' = 9");
    expect_bad_policy(a, "\"actions\": [", "\"actions\": [0,", "11 'actions'");
    expect_bad_policy(a, "\"format\": \"graft.nbody-policy\"", "\"format\": \"other\"",
                      "'format' must be \"graft.nbody-policy\"");
    expect_bad_policy(a, "\"vy2\"", "\"vz2\"", "'state.features[11]' must be \"vy2\"");
    expect_bad_policy(a, "\"chunk\": ", "\"chunk\": -", "'chunk' must be a number > 0");
    /* a directory without an artifact */
    char *empty = scratch("nbody-empty-");
    CHECK(gr_nbrl_policy_load(empty) == NULL);
    CHECK(gr_errcode() == GR_ENOTFOUND);
    CHECK_CONTAINS(gr_errmsg(), "config.json");
    gr_fs_rmrf(empty);
    free(empty);
    gr_fs_rmrf(a);
    free(a);
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
    RUN(test_op_fixed);
    RUN(test_op_bad_input);
    RUN(test_op_train_and_rl);
    RUN(test_policy_wrong_shape);
    TEST_MAIN_END();
}
