/* test_report: stage-id bindings, CSV, Markdown pivot tables (exact text),
 * selectors (means, ambiguity), line and scatter plots (their numbers and
 * well-formed SVG), and the report op on input trees with and without the
 * broker's _inputs descriptions. */
#include "gr_test.h"

#include "gr_err.h"
#include "gr_fs.h"
#include "gr_json.h"
#include "gr_op.h"
#include "gr_report.h"

#include <stdarg.h>
#include <unistd.h>

static char tmpdir[256];

static const char *tpath(const char *rel)
{
    static char buf[8][512];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/%s", tmpdir, rel);
    return b;
}

static gr_json *J(const char *text)
{
    gr_json *j = gr_json_parse(text, strlen(text), "test");
    if (!j) fprintf(stderr, "bad JSON in test: %s\n", text);
    return j;
}

static int add(gr_report *r, const char *stage, const char *params, const char *metrics)
{
    gr_json *p = params ? J(params) : NULL, *m = metrics ? J(metrics) : NULL;
    int rc = gr_report_add(r, stage, "evaluate", p, m);
    gr_json_free(p);
    gr_json_free(m);
    return rc;
}

static void test_bindings_and_csv(void)
{
    gr_report *r = gr_report_new();
    /* bindings override parameters; artifact ids and _names are not variables */
    CHECK(add(r, "ev[density=0.1,method=dare]",
              "{\"method\":\"x\",\"model\":\"sha256:00\",\"_inputs\":1,\"split\":\"test\","
              "\"limit\":0}",
              "{\"acc\":0.5,\"rows_per_s\":100,\"note\":\"s\"}") == 0);
    /* values holding commas and brackets (JSON lists, strings) */
    CHECK(add(r, "m[w=[1,2],x=a,b]", NULL, "{\"acc\":0.25}") == 0);
    CHECK(add(r, "plain", NULL, "{\"loss\":1.5}") == 0);
    CHECK(gr_report_count(r) == 3);
    gr_buf b = {0};
    CHECK(gr_report_csv(r, NULL, 0, &b) == 0);
    const char *want = "stage,op,density,limit,method,split,w,x\n"
                       "\"ev[density=0.1,method=dare]\",evaluate,0.1,0,dare,test,,,0.5,\n"
                       "\"m[w=[1,2],x=a,b]\",evaluate,,,,,\"[1,2]\",\"a,b\",0.25,\n"
                       "plain,evaluate,,,,,,,,1.5\n";
    /* the header ends with the default metrics: acc, loss (no timings) */
    CHECK_MSG(b.data && !strncmp(b.data, "stage,op,density,limit,method,split,w,x,acc,loss\n", 48),
              "%s", b.data);
    const char *body = b.data ? strchr(b.data, '\n') : NULL;
    CHECK_MSG(body && !strcmp(body + 1, strchr(want, '\n') + 1), "%s", b.data);
    gr_buf_reset(&b);
    const char *only[] = {"rows_per_s"};
    CHECK(gr_report_csv(r, only, 1, &b) == 0);
    CHECK_CONTAINS(b.data, ",rows_per_s\n");
    CHECK_CONTAINS(b.data, "dare,test,,,100\n");
    gr_buf_free(&b);

    CHECK(add(r, "[a=1]", NULL, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "stage id '[a=1]': want name[var=value,...]");
    CHECK(add(r, "x[a]", NULL, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "binding at offset 2 is not var=value");
    CHECK(add(r, "x[a=1", NULL, NULL) == GR_EINVAL);
    CHECK(add(r, "", NULL, NULL) == GR_EINVAL);
    CHECK(gr_report_count(r) == 3);
    gr_report_destroy(&r);
    CHECK(r == NULL);
}

/* records of a small merge experiment: method x lambda x transform */
static gr_report *merge_records(void)
{
    gr_report *r = gr_report_new();
    const char *methods[] = {"ta", "ties"}, *lambdas[] = {"0.5", "1"}, *tf[] = {"id", "rot"};
    for (int m = 0; m < 2; m++)
        for (int l = 0; l < 2; l++)
            for (int t = 0; t < 2; t++) {
                char id[128], met[128];
                snprintf(id, sizeof id, "ev[lambda=%s,method=%s,transform=%s]", lambdas[l],
                         methods[m], tf[t]);
                /* acc = 0.1 * (1 + m) + 0.01 * (1 + l) + 0.5 * t */
                snprintf(met, sizeof met, "{\"acc\":%.17g,\"n\":10}",
                         0.1 * (1 + m) + 0.01 * (1 + l) + 0.5 * t);
                add(r, id, "{\"task\":\"classify\"}", met);
            }
    add(r, "single[model=base,transform=id]", NULL, "{\"acc\":0.9}");
    add(r, "single[model=base,transform=rot]", NULL, "{\"acc\":0.1}");
    add(r, "single[model=ft,transform=rot]", NULL, "{\"acc\":0.8}");
    return r;
}

static int table(gr_report *r, const char *spec, gr_buf *out)
{
    gr_json *s = J(spec);
    int rc = gr_report_md_table(r, s, "tables[0]", out);
    gr_json_free(s);
    return rc;
}

static void test_tables(void)
{
    gr_report *r = merge_records();
    gr_buf b = {0};
    int rc = table(r,
                   "{\"title\":\"T\",\"from\":\"ev\",\"rows\":[\"method\",\"lambda\"],"
                   "\"cols\":\"transform\",\"value\":\"acc\",\"mean\":true}",
                   &b);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    const char *want = "### T\n\n"
                       "| method | lambda |    id |   rot |  mean |\n"
                       "|:-------|:-------|------:|------:|------:|\n"
                       "| ta     | 0.5    | 0.110 | 0.610 | 0.360 |\n"
                       "| ta     | 1      | 0.120 | 0.620 | 0.370 |\n"
                       "| ties   | 0.5    | 0.210 | 0.710 | 0.460 |\n"
                       "| ties   | 1      | 0.220 | 0.720 | 0.470 |\n\n";
    CHECK_MSG(b.data && !strcmp(b.data, want), "got:\n%s", b.data);
    gr_buf_reset(&b);

    /* values mode with a mean selector; digits */
    rc = table(r,
               "{\"from\":\"ev\",\"rows\":\"method\",\"values\":[\"acc@transform=*\","
               "\"acc@transform=rot,lambda=1\",\"n@lambda=0.5\"]}",
               &b);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    CHECK_CONTAINS(b.data,
                   "| method | acc@transform=* | acc@transform=rot,lambda=1 | n@lambda=0.5 |");
    CHECK_CONTAINS(b.data,
                   "| ta     |           0.365 |                      0.620 |       10.000 |");
    CHECK_CONTAINS(b.data,
                   "| ties   |           0.465 |                      0.720 |       10.000 |");
    gr_buf_reset(&b);

    /* missing cells show '-', mean only for complete rows; where with null */
    rc = table(r,
               "{\"from\":\"single\",\"rows\":\"model\",\"cols\":\"transform\",\"value\":\"acc\","
               "\"mean\":true}",
               &b);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    CHECK_CONTAINS(b.data, "| base  | 0.900 | 0.100 | 0.500 |");
    CHECK_CONTAINS(b.data, "| ft    |     - | 0.800 |     - |");
    gr_buf_reset(&b);
    rc = table(r,
               "{\"where\":{\"model\":[null,\"ft\"],\"lambda\":[null,1]},\"rows\":\"name\","
               "\"cols\":\"transform\",\"value\":\"acc@method=ties|x\",\"mean\":[\"rot\"]}",
               &b);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    CHECK_CONTAINS(b.data, "| name   |    id |   rot | mean (rot) |");
    CHECK_CONTAINS(b.data, "| ev     | 0.220 | 0.720 |      0.720 |");
    CHECK_CONTAINS(b.data, "| single |     - |     - |          - |");
    gr_buf_reset(&b);

    /* errors */
    CHECK(table(r, "{\"rows\":\"method\",\"cols\":\"transform\",\"value\":\"acc\"}", &b) ==
          GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "tables[0], row 1: 'acc' is ambiguous: stages "
                                "'ev[lambda=0.5,method=ta,transform=id]' and "
                                "'ev[lambda=1,method=ta,transform=id]' both give it");
    CHECK(table(r, "{\"from\":\"nope\",\"rows\":\"a\",\"values\":[\"acc\"]}", &b) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "'from' names 'nope', which is not among the inputs");
    CHECK(table(r, "{\"rows\":\"a\",\"values\":[\"acc\"],\"colour\":1}", &b) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "tables[0]: unknown field 'colour'");
    CHECK(table(r, "{\"rows\":\"a\",\"cols\":\"b\"}", &b) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "with 'cols', 'value' (a selector) is required");
    CHECK(table(r, "{\"cols\":\"b\",\"value\":\"acc\"}", &b) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "'rows' (variables) is required");
    CHECK(table(r, "{\"rows\":\"method\",\"values\":[\"acc@\"]}", &b) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "selector 'acc@'");
    CHECK(table(r, "{\"rows\":\"method\",\"values\":[\"@x=1\"]}", &b) == GR_EINVAL);
    CHECK(table(r, "{\"rows\":\"method\",\"values\":[\"acc@x\"]}", &b) == GR_EINVAL);
    CHECK(table(r, "{\"rows\":\"method\",\"values\":[\"acc@x=1,\"]}", &b) == GR_EINVAL);
    CHECK(table(r, "{\"rows\":\"m\",\"where\":{\"m\":\"zzz\"},\"values\":[\"acc\"]}", &b) ==
          GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "no input stage passes 'from' and 'where'");
    CHECK(table(r,
                "{\"rows\":\"method\",\"cols\":\"transform\",\"value\":\"acc\",\"mean\":[\"q\"]}",
                &b) == GR_EINVAL);
    CHECK(table(r, "{\"rows\":\"m\",\"values\":[\"acc\"],\"digits\":40}", &b) == GR_EINVAL);
    gr_buf_free(&b);
    gr_report_destroy(&r);
}

/* Values too small for the fixed decimals (energy errors) keep their
 * significant digits in exponent form instead of printing as 0.000. */
static void test_small_values(void)
{
    gr_report *r = gr_report_new();
    CHECK(add(r, "nb[mu=0.1]", NULL, "{\"err\":3.93897252e-10,\"steps\":5}") == 0);
    CHECK(add(r, "nb[mu=0.01]", NULL, "{\"err\":0,\"steps\":24.5}") == 0);
    gr_buf b = {0};
    int rc = table(r, "{\"rows\":\"mu\",\"values\":[\"err\",\"steps\"]}", &b);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    CHECK_CONTAINS(b.data, "| 0.1  | 3.94e-10 |  5.000 |");
    CHECK_CONTAINS(b.data, "| 0.01 |    0.000 | 24.500 |");
    gr_buf_free(&b);
    gr_report_destroy(&r);
}

static int plot(gr_report *r, const char *spec, const char *file, gr_buf *csv)
{
    gr_json *s = J(spec);
    gr_buf_reset(csv);
    int rc = gr_report_plot(r, s, "plots[0]", tpath(file), csv);
    gr_json_free(s);
    return rc;
}

/* Whether Python's XML parser accepts the file (plain, well-formed SVG). */
static int well_formed(const char *path)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import sys, xml.etree.ElementTree as E; "
             "r = E.parse(sys.argv[1]).getroot(); sys.exit(0 if r.tag.endswith('svg') else 1)\" "
             "'%s'",
             path);
    return system(cmd) == 0;
}

static void test_plots(void)
{
    gr_report *r = merge_records();
    gr_buf csv = {0};
    int rc = plot(r,
                  "{\"title\":\"mean\",\"from\":[\"ev\",\"single\"],\"where\":{\"model\":[null,"
                  "\"base\"]},\"x\":\"lambda\",\"y\":\"acc@transform=*\",\"series\":\"method\","
                  "\"ref_label\":\"model\",\"xlog\":true}",
                  "line.svg", &csv);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    /* per method, points sorted by lambda, y the mean over transforms; the
     * base is a reference line at the mean of its two accuracies */
    const char *want = "series,x,y\n"
                       "ta,0.5,0.36\n"
                       "ta,1,0.37\n"
                       "ties,0.5,0.45999999999999996\n"
                       "ties,1,0.47\n"
                       "ref base,,0.5\n";
    CHECK_MSG(csv.data && !strcmp(csv.data, want), "got:\n%s", csv.data);
    CHECK(well_formed(tpath("line.svg")));
    char *svg;
    size_t len;
    CHECK(gr_fs_read_file(tpath("line.svg"), 1 << 22, &svg, &len) == 0);
    CHECK_CONTAINS(svg, ">ties<");
    CHECK_CONTAINS(svg, ">base<");
    CHECK_CONTAINS(svg, ">mean<");
    free(svg);

    rc = plot(r,
              "{\"kind\":\"scatter\",\"x\":\"acc@transform=id\",\"y\":\"acc@transform=rot\","
              "\"series\":\"method\",\"label\":[\"lambda\",\"model\"]}",
              "scatter.svg", &csv);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    CHECK_CONTAINS(csv.data, "ta,0.11,0.61\n");
    CHECK_CONTAINS(csv.data, "ties,0.22,0.72\n");
    /* points without the series variable are their stage's series */
    CHECK_CONTAINS(csv.data, "single,0.9,0.1\n");
    CHECK_CONTAINS(csv.data, "single,,0.8\n");
    CHECK(well_formed(tpath("scatter.svg")));

    /* errors, and nothing left under the plot's name */
    CHECK(plot(r, "{\"x\":\"method\",\"y\":\"acc\"}", "bad.svg", &csv) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "x variable 'method' of stage 'ev[lambda=0.5,method=ta,"
                                "transform=id]' is 'ta', not a number");
    CHECK(!gr_fs_exists(tpath("bad.svg")));
    CHECK(plot(r, "{\"from\":\"ev\",\"x\":\"lambda\",\"y\":\"acc\",\"series\":\"method\"}",
               "bad.svg", &csv) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "'acc' is ambiguous");
    CHECK(plot(r, "{\"kind\":\"bar\",\"x\":\"lambda\",\"y\":\"acc\"}", "bad.svg", &csv) ==
          GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "kind 'bar': want line or scatter");
    CHECK(plot(r, "{\"x\":\"lambda\"}", "bad.svg", &csv) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "a line plot needs 'x' (a variable) and 'y' (a selector)");
    CHECK(plot(r, "{\"from\":\"single\",\"x\":\"lambda\",\"y\":\"acc\"}", "bad.svg", &csv) ==
          GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "no input stage has the x variable 'lambda'");
    CHECK(plot(r, "{\"x\":\"lambda\",\"y\":\"acc\",\"xlog\":1}", "bad.svg", &csv) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "'xlog' must be true or false");
    CHECK(!gr_fs_exists(tpath("bad.svg")));
    gr_buf_free(&csv);
    gr_report_destroy(&r);
}

/* An evaluate-like output tree: result.json with metrics. */
static void make_input(const char *dir, double acc)
{
    gr_fs_mkdirs(tpath(dir), 0755, 0);
    char text[256];
    snprintf(text, sizeof text, "{\"task\":\"classify\",\"metrics\":{\"acc\":%.17g,\"n\":100}}\n",
             acc);
    char *p = gr_fs_join(tpath(dir), "result.json");
    gr_fs_write_atomic(p, text, strlen(text), 0644);
    free(p);
}

static int run_report(const char *params, gr_json **metrics)
{
    const gr_op *op = gr_op_find("report");
    gr_json *p = J(params);
    /* the worker checks the parameters without the broker's reserved ones */
    int rc = p && op ? (gr_json_get(p, "_inputs") ? 0 : gr_op_check_params(op, p)) : -100;
    *metrics = NULL;
    if (!rc) {
        gr_fs_rmrf(tpath("out"));
        gr_fs_mkdirs(tpath("out"), 0755, 0);
        gr_op_ctx ctx = {.op = op, .params = p, .outdir = tpath("out"), .threads = 1};
        rc = op->run(&ctx);
        if (!rc) *metrics = gr_json_parse(ctx.metrics.data, ctx.metrics.len, "metrics");
        gr_buf_free(&ctx.metrics);
    }
    gr_json_free(p);
    return rc;
}

static void test_op(void)
{
    /* without a broker: stage names are the input trees' names */
    make_input("ev[density=0.1,method=dare]", 0.2);
    make_input("ev[density=0.5,method=dare]", 0.6);
    make_input("ev[density=0.1,method=magnitude]", 0.8);
    make_input("ev[density=0.5,method=magnitude]", 0.9);
    char params[4096];
    snprintf(params, sizeof params,
             "{\"inputs\":[\"%s\",\"%s\",\"%s\",\"%s\"],\"title\":\"sweep\","
             "\"tables\":[{\"rows\":\"density\",\"cols\":\"method\",\"value\":\"acc\"}],"
             "\"plots\":[{\"file\":\"sweep\",\"x\":\"density\",\"y\":\"acc\",\"series\":"
             "\"method\"}]}",
             tpath("ev[density=0.1,method=dare]"), tpath("ev[density=0.5,method=dare]"),
             tpath("ev[density=0.1,method=magnitude]"), tpath("ev[density=0.5,method=magnitude]"));
    gr_json *m;
    int rc = run_report(params, &m);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    CHECK(m && gr_json_get_int(m, "stages", 0) == 4 && gr_json_get_int(m, "plots", 0) == 1);
    gr_json_free(m);
    char *md, *csv, *pc;
    size_t len;
    CHECK(gr_fs_read_file(tpath("out/report.md"), 1 << 20, &md, &len) == 0);
    CHECK(!strncmp(md, "# sweep\n\n", 9));
    CHECK_CONTAINS(md, "| density |  dare | magnitude |\n"
                       "|:--------|------:|----------:|\n"
                       "| 0.1     | 0.200 |     0.800 |\n"
                       "| 0.5     | 0.600 |     0.900 |\n");
    CHECK_CONTAINS(md, "![sweep.svg](sweep.svg)");
    CHECK_CONTAINS(md, "### All stages");
    CHECK(gr_fs_read_file(tpath("out/report.csv"), 1 << 20, &csv, &len) == 0);
    CHECK_CONTAINS(
        csv, "stage,op,density,method,acc,n\n\"ev[density=0.1,method=dare]\",,0.1,dare,0.2,100\n");
    CHECK(gr_fs_read_file(tpath("out/sweep.csv"), 1 << 20, &pc, &len) == 0);
    CHECK_CONTAINS(pc, "dare,0.1,0.2\ndare,0.5,0.6\nmagnitude,0.1,0.8\nmagnitude,0.5,0.9\n");
    CHECK(well_formed(tpath("out/sweep.svg")));
    free(md);
    free(csv);
    free(pc);

    /* with the broker's descriptions: stage ids, params and metrics from
     * _inputs (result.json wins for names it has) */
    make_input("a", 0.25);
    gr_fs_mkdirs(tpath("ckpt"), 0755, 0);
    snprintf(
        params, sizeof params,
        "{\"inputs\":[\"%s\",\"%s\"],\"_inputs\":["
        "{\"stage\":\"ev[lambda=0.5]\",\"op\":\"evaluate\",\"params\":{\"transform\":\"rot90\"},"
        "\"metrics\":{\"acc\":0.99,\"rows_per_s\":5}},"
        "{\"stage\":\"base\",\"op\":\"train\",\"params\":{},\"metrics\":{\"test_acc\":0.97}}]}",
        tpath("a"), tpath("ckpt"));
    rc = run_report(params, &m);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    gr_json_free(m);
    CHECK(gr_fs_read_file(tpath("out/report.csv"), 1 << 20, &csv, &len) == 0);
    CHECK_MSG(!strcmp(csv, "stage,op,lambda,transform,acc,n,test_acc\n"
                           "ev[lambda=0.5],evaluate,0.5,rot90,0.25,100,\n"
                           "base,train,,,,,0.97\n"),
              "got:\n%s", csv);
    free(csv);

    /* bad parameters */
    snprintf(params, sizeof params,
             "{\"inputs\":[\"%s\"],\"plots\":[{\"file\":\"../x\",\"x\":\"a\"}]}", tpath("a"));
    CHECK(run_report(params, &m) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "plots[0]: 'file' must be a plain file name");
    snprintf(params, sizeof params,
             "{\"inputs\":[\"%s\"],\"plots\":[{\"file\":\"p\",\"x\":\"density\",\"y\":\"acc\"},"
             "{\"file\":\"p.svg\",\"x\":\"density\",\"y\":\"acc\"}]}",
             tpath("ev[density=0.1,method=dare]"));
    CHECK(run_report(params, &m) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "plots[1]: file 'p.svg' is used by another plot");
    snprintf(params, sizeof params, "{\"inputs\":[\"%s\"],\"tables\":{\"rows\":\"a\"}}",
             tpath("a"));
    CHECK(run_report(params, &m) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "'tables' and 'plots' must be lists of objects");
    snprintf(params, sizeof params, "{\"inputs\":[\"%s\"],\"metrics\":[1]}", tpath("a"));
    CHECK(run_report(params, &m) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "parameter 'metrics' must be a list");
    gr_fs_write_atomic(tpath("broken.json"), "{\"metrics\":", 11, 0644);
    snprintf(params, sizeof params, "{\"inputs\":[\"%s\"]}", tpath("broken.json"));
    CHECK(run_report(params, &m) != 0);
    CHECK_CONTAINS(gr_errmsg(), "broken.json");
    CHECK(!gr_fs_exists(tpath("out/report.md")));
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_report.XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    RUN(test_bindings_and_csv);
    RUN(test_tables);
    RUN(test_small_values);
    RUN(test_plots);
    RUN(test_op);
    gr_fs_rmrf(tmpdir);
    TEST_MAIN_END();
}
