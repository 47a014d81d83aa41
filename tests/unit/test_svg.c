/* Tests for gr_svg: documents are well-formed XML (checked by Python's XML
 * parser when available, and by a tag-balance check here), data map to the
 * expected pixels, log ticks, line breaks at NaN, escaping, bad input. */
#include "gr_err.h"
#include "gr_svg.h"
#include "gr_test.h"

#include <sys/stat.h>
#include <unistd.h>

/* Counts non-overlapping occurrences of sub in s. */
static int count(const char *s, const char *sub)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p += strlen(sub)) n++;
    return n;
}

/* Minimal well-formedness check: every <tag> is closed in order, no stray
 * '<' or '&' in text. */
static int balanced(const char *s)
{
    char stack[64][32];
    int depth = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '&') {
            if (strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) &&
                strncmp(p, "&quot;", 6) && strncmp(p, "&apos;", 6))
                return 0;
            continue;
        }
        if (*p != '<') continue;
        if (p[1] == '?') {
            p = strstr(p, "?>");
            if (!p) return 0;
            continue;
        }
        const char *end = strchr(p, '>');
        if (!end) return 0;
        if (p[1] == '/') {
            if (depth == 0) return 0;
            size_t n = strlen(stack[depth - 1]);
            if (strncmp(p + 2, stack[depth - 1], n) || p[2 + n] != '>') return 0;
            depth--;
        } else if (end[-1] != '/') {
            size_t n = strcspn(p + 1, " >/\n");
            if (n >= 32 || depth == 64) return 0;
            memcpy(stack[depth], p + 1, n);
            stack[depth++][n] = 0;
        }
        p = end;
    }
    return depth == 0;
}

/* Parses the file with Python's XML parser (an outside check); returns 1 if
 * well-formed, 0 if not, -1 if Python is not there. */
static int python_parses(const char *path)
{
    if (access("/usr/bin/python3", X_OK) != 0) return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import sys,xml.etree.ElementTree as E; "
             "r=E.parse(sys.argv[1]).getroot(); sys.exit(0 if r.tag.endswith(\"svg\") else 1)' %s",
             path);
    return system(cmd) == 0;
}

static void test_line_pixels(void)
{
    gr_svg_plot *p = gr_svg_new(400, 300);
    CHECK(p != NULL);
    gr_svg_direct_labels(p, 0);
    CHECK(gr_svg_xrange(p, 0, 1) == 0);
    CHECK(gr_svg_yrange(p, 0, 1) == 0);
    double x[] = {0, 1}, y[] = {0, 1};
    CHECK(gr_svg_line(p, NULL, x, y, 2) == 0);
    gr_buf b = {0};
    CHECK(gr_svg_render(p, &b) == 0);
    /* Without title and axis labels the data area is left 58, top 14,
     * right margin 15, bottom 32: (0,0) is the bottom-left corner and (1,1)
     * the top-right one. */
    char want[128];
    snprintf(want, sizeof want, "points=\"%.2f,%.2f %.2f,%.2f \"", 58.0, 300 - 32.0, 400 - 15.0,
             14.0);
    CHECK_CONTAINS(b.data, want);
    CHECK(balanced(b.data));
    /* ticks at 0, 0.2, ..., 1 (1-2-5 step 0.2 for a unit span) */
    CHECK_CONTAINS(b.data, ">0.2</text>");
    CHECK_CONTAINS(b.data, ">0.8</text>");
    gr_buf_free(&b);
    /* integers print as integers, never 1e+02 */
    CHECK(gr_svg_xrange(p, -600, 100) == 0);
    CHECK(gr_svg_render(p, &b) == 0);
    CHECK_CONTAINS(b.data, ">100</text>");
    CHECK_CONTAINS(b.data, ">-600</text>");
    CHECK(!strstr(b.data, "e+02"));
    gr_buf_free(&b);
    gr_svg_destroy(&p);
    CHECK(p == NULL);
    gr_svg_destroy(&p); /* NULL is fine */
}

static void test_log_and_breaks(void)
{
    gr_svg_plot *p = gr_svg_new(500, 320);
    gr_svg_title(p, "energy error <|dE/E|> & steps");
    gr_svg_xlabel(p, "time");
    gr_svg_ylabel(p, "|dE/E|");
    gr_svg_ylog(p, 1);
    double t[7] = {0, 1, 2, 3, 4, 5, 6};
    /* NaN and -1 (not drawable on a log axis) break the line into two
     * pieces and an isolated point (drawn as a dot) */
    double e[7] = {1e-12, 1e-10, NAN, 1e-8, 1e-7, -1, 1e-6};
    int s = gr_svg_line(p, "mu=0.01", t, e, 7);
    CHECK(s == 0);
    double t2[2] = {0, 5}, e2[2] = {1e-11, 1e-9};
    CHECK(gr_svg_line(p, "mu=0.001", t2, e2, 2) == 1);
    CHECK(gr_svg_series_dashed(p, 1, 1) == 0);
    CHECK(gr_svg_hline(p, 1e-10, "target") == 0);
    gr_buf b = {0};
    CHECK(gr_svg_render(p, &b) == 0);
    /* three polylines: two pieces of series 0, one of series 1 */
    CHECK_EQ_INT(count(b.data, "<polyline"), 3);
    CHECK_EQ_INT(count(b.data, "<circle"), 1);
    CHECK_CONTAINS(b.data, "10<tspan dy=\"-4\" font-size=\"8\">-10</tspan>");
    CHECK_CONTAINS(b.data, "10<tspan dy=\"-4\" font-size=\"8\">-6</tspan>");
    CHECK_CONTAINS(b.data, "energy error &lt;|dE/E|&gt; &amp; steps");
    CHECK_CONTAINS(b.data, ">mu=0.01</text>");
    CHECK_CONTAINS(b.data, "stroke-dasharray=\"6,4\"");
    CHECK_CONTAINS(b.data, ">target</text>");
    CHECK(balanced(b.data));
    gr_buf_free(&b);

    char path[] = "/tmp/gr_svg_testXXXXXX";
    CHECK(mkdtemp(path) != NULL);
    char file[600];
    snprintf(file, sizeof file, "%s/plot.svg", path);
    CHECK(gr_svg_save(p, file) == 0);
    int py = python_parses(file);
    if (py < 0)
        printf("skip: /usr/bin/python3 missing, XML checked by tag balance only\n");
    else
        CHECK_MSG(py == 1, "python's XML parser rejected %s", file);
    unlink(file);
    rmdir(path);
    gr_svg_destroy(&p);
}

static void test_scatter_grid(void)
{
    gr_svg_plot *a = gr_svg_new(300, 300), *b = gr_svg_new(400, 250);
    gr_svg_equal_aspect(a, 1);
    double x[3] = {-1, 0, 2}, y[3] = {0, 1, 0};
    CHECK(gr_svg_line(a, "body 0", x, y, 3) == 0);
    CHECK(gr_svg_series_markers(a, 0, 2) == 0);
    gr_svg_xlog(b, 1);
    gr_svg_ylog(b, 1);
    double steps[3] = {1e3, 1e4, 1e5}, err[3] = {1e-4, 1e-8, 1e-12};
    int s = gr_svg_scatter(b, "fixed mu", steps, err, 3);
    CHECK(s == 0);
    const char *lab[3] = {"0.1", NULL, "0.001"};
    CHECK(gr_svg_point_labels(b, s, lab, 3) == 0);
    CHECK(gr_svg_point_labels(b, s, lab, 2) == GR_EINVAL);
    CHECK(gr_svg_series_color(b, s, "#a0b") == 0);
    const gr_svg_plot *pl[2] = {a, b};
    gr_buf out = {0};
    CHECK(gr_svg_render_grid(pl, 2, 2, &out) == 0);
    CHECK_CONTAINS(out.data, "width=\"800\" height=\"300\"");
    CHECK_CONTAINS(out.data, "gr-clip-0");
    CHECK_CONTAINS(out.data, "gr-clip-1");
    CHECK_EQ_INT(count(out.data, "r=\"3.00\" fill=\"#a0b\""), 3);
    CHECK_CONTAINS(out.data, ">0.001</text>");
    CHECK(balanced(out.data));
    gr_buf_free(&out);
    gr_svg_destroy(&a);
    gr_svg_destroy(&b);
}

static void test_bad_input(void)
{
    CHECK(gr_svg_new(10, 10) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "plot size 10x10");
    gr_svg_plot *p = gr_svg_new(200, 150);
    CHECK(gr_svg_xrange(p, 1, 1) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "lo < hi");
    CHECK(gr_svg_yrange(p, 0, INFINITY) == GR_EINVAL);
    CHECK(gr_svg_line(p, "x", NULL, NULL, 3) == GR_EINVAL);
    CHECK(gr_svg_series_color(p, 0, "#fff") == GR_EINVAL); /* no series yet */
    double v[1] = {1};
    CHECK(gr_svg_line(p, "x", v, v, 1) == 0);
    CHECK(gr_svg_series_color(p, 0, "red") == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "colour 'red'");
    CHECK(gr_svg_series_width(p, 0, 0) == GR_EINVAL);
    CHECK(gr_svg_hline(p, NAN, NULL) == GR_EINVAL);
    CHECK(gr_svg_render_grid(NULL, 0, 1, &(gr_buf){0}) == GR_EINVAL);
    /* a single point and an empty plot still render */
    gr_buf b = {0};
    CHECK(gr_svg_render(p, &b) == 0 && balanced(b.data));
    gr_buf_free(&b);
    gr_svg_plot *e = gr_svg_new(200, 150);
    CHECK(gr_svg_render(e, &b) == 0 && balanced(b.data));
    gr_buf_free(&b);
    /* saving into a missing directory fails and leaves nothing */
    CHECK(gr_svg_save(p, "/nonexistent-dir-gr/plot.svg") == GR_EIO);
    CHECK_CONTAINS(gr_errmsg(), "/nonexistent-dir-gr/plot.svg");
    gr_svg_destroy(&p);
    gr_svg_destroy(&e);
}

int main(void)
{
    RUN(test_line_pixels);
    RUN(test_log_and_breaks);
    RUN(test_scatter_grid);
    RUN(test_bad_input);
    TEST_MAIN_END();
}
