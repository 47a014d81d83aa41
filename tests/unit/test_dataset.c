/* test_dataset: CSV parsing (and every refusal), gzip input, directories,
 * deterministic splits and the image/noise transforms. */
#include "gr_test.h"

#include "gr_dataset.h"
#include "gr_err.h"
#include "gr_fs.h"

#include <unistd.h>

static const char *DIGITS = GRAFT_SOURCE_DIR "/examples/data/digits.csv.gz";
static char tmpdir[256];

static const char *tpath(const char *rel)
{
    static char buf[4][512];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", tmpdir, rel);
    return b;
}

static gr_dataset *parse(const char *s)
{
    return gr_dataset_parse("t.csv", s, strlen(s));
}

static void test_parse_ok(void)
{
    /* BOM, header, CRLF, spaces, signs, exponents, trailing blank lines */
    const char *s = "\xEF\xBB\xBF"
                    "a, b ,label\r\n1,-2.5,0\r\n +3e1 ,4.,2\r\n.5,-0,1\n\n\n";
    gr_dataset *d = parse(s);
    CHECK_MSG(d != NULL, "%s", gr_errmsg());
    if (!d) return;
    CHECK(gr_dataset_rows(d) == 3 && gr_dataset_features(d) == 2 && gr_dataset_classes(d) == 3);
    const float want[] = {1, -2.5f, 30, 4, 0.5f, 0};
    int eq = 1;
    for (int i = 0; i < 6; i++) eq &= gr_dataset_x(d)[i] == want[i];
    CHECK(eq);
    CHECK(gr_dataset_y(d)[0] == 0 && gr_dataset_y(d)[1] == 2 && gr_dataset_y(d)[2] == 1);
    CHECK(gr_dataset_row_ids(d)[2] == 2);
    CHECK(gr_dataset_min(d) == -2.5 && gr_dataset_max(d) == 30);
    gr_dataset_destroy(&d);
    CHECK(d == NULL);
    /* no header, no final newline, label written 2.0 */
    d = parse("1,2,2.0");
    CHECK(d && gr_dataset_rows(d) == 1 && gr_dataset_y(d)[0] == 2 && gr_dataset_classes(d) == 3);
    gr_dataset_destroy(&d);
}

static void expect_error(const char *text, const char *msg)
{
    gr_dataset *d = parse(text);
    CHECK_MSG(d == NULL, "accepted: %s", text);
    CHECK_CONTAINS(gr_errmsg(), msg);
    gr_dataset_destroy(&d);
}

static void test_parse_errors(void)
{
    expect_error("", "t.csv: no data rows");
    expect_error("a,b\n", "no data rows");
    expect_error("1,2\n3\n", "t.csv: line 2: 1 fields, the first line has 2");
    expect_error("1,2\n3,4,5\n", "line 2: 3 fields");
    expect_error("5\n", "line 1: 1 field; need features and a label");
    expect_error("1,2\n\n3,4\n", "line 2: empty line inside the data");
    expect_error("1,2\nx,3\n", "line 2, column 1: 'x' is not a number");
    expect_error("1,2\n1,,3\n", "line 2: 3 fields");
    expect_error("1,2\n1,\n", "line 2, column 2: '' is not a number");
    expect_error("1,2\nnan,1\n", "'nan' is not a number");
    expect_error("1,2\ninf,1\n", "'inf' is not a number");
    expect_error("1,2\n0x10,1\n", "'0x10' is not a number");
    expect_error("1,2\n\"1\",1\n", "is not a number");
    expect_error("1,2\n1e39,1\n", "'1e39' is outside the float range");
    expect_error("1,2\n1,2.5\n", "column 2 (label): '2.5' is not an integer in [0, 65536)");
    expect_error("1,2\n1,-1\n", "(label): '-1'");
    expect_error("1,2\n1,65536\n", "(label): '65536'");
    expect_error("1,2\n1,1e\n", "'1e' is not a number");
    expect_error("1,2\n1,.\n", "'.' is not a number");
    gr_dataset *z = gr_dataset_parse("t.csv", "1,2\n1\0,1\n", 9);
    CHECK(z == NULL);
    CHECK_CONTAINS(gr_errmsg(), "line 2: NUL byte");
    /* a field longer than any number */
    char big[200] = "1,2\n";
    memset(big + 4, '1', 100);
    strcpy(big + 104, ",1\n");
    expect_error(big, "line 2, column 1: '111111111111111111111111...' is not a number");
}

static void test_digits_gz(void)
{
    gr_dataset *d = gr_dataset_load(DIGITS);
    CHECK_MSG(d != NULL, "%s", gr_errmsg());
    if (!d) return;
    /* the UCI test part as sklearn ships it: 1797 images of 8x8 pixels,
     * 0..16, these counts per class (sklearn's load_digits documentation) */
    CHECK(gr_dataset_rows(d) == 1797 && gr_dataset_features(d) == 64);
    CHECK(gr_dataset_classes(d) == 10);
    CHECK(gr_dataset_min(d) == 0 && gr_dataset_max(d) == 16);
    const int per_class[10] = {178, 182, 177, 183, 181, 182, 181, 179, 174, 180};
    int count[10] = {0};
    double sum = 0;
    for (size_t i = 0; i < 1797; i++) count[gr_dataset_y(d)[i]]++;
    for (size_t i = 0; i < 1797 * 64; i++) sum += gr_dataset_x(d)[i];
    CHECK(!memcmp(count, per_class, sizeof count));
    CHECK(sum == 561718); /* awk -F, over the decompressed file */
    /* the same rows from the decompressed text, and from a directory */
    char cmd[1024];
    gr_fs_mkdirs(tpath("dir"), 0755, 0);
    snprintf(cmd, sizeof cmd, "gzip -dc '%s' > '%s'", DIGITS, tpath("dir/digits.csv"));
    CHECK(system(cmd) == 0);
    gr_dataset *t = gr_dataset_load(tpath("dir"));
    CHECK_MSG(t != NULL, "%s", gr_errmsg());
    CHECK(t && gr_dataset_rows(t) == 1797 &&
          !memcmp(gr_dataset_x(t), gr_dataset_x(d), 1797 * 64 * sizeof(float)) &&
          !memcmp(gr_dataset_y(t), gr_dataset_y(d), 1797 * sizeof(int32_t)));
    gr_dataset_destroy(&t);
    gr_dataset_destroy(&d);

    /* a second data file makes the directory ambiguous; none is an error */
    gr_fs_write_atomic(tpath("dir/more.csv.gz"), "x", 1, 0644);
    CHECK(gr_dataset_load(tpath("dir")) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "holds several .csv/.csv.gz files");
    gr_fs_mkdirs(tpath("empty"), 0755, 0);
    gr_fs_write_atomic(tpath("empty/notes.txt"), "x", 1, 0644);
    CHECK(gr_dataset_load(tpath("empty")) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "holds no .csv or .csv.gz file");
    /* gzip magic followed by garbage, and a truncated gzip stream */
    gr_fs_write_atomic(tpath("bad.csv.gz"), "\x1f\x8b\x08\x00garbage", 11, 0644);
    CHECK(gr_dataset_load(tpath("bad.csv.gz")) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "bad.csv.gz: not a valid gzip file");
    char *gz;
    size_t gzlen;
    CHECK(gr_fs_read_file(DIGITS, 1 << 24, &gz, &gzlen) == 0);
    gr_fs_write_atomic(tpath("cut.csv.gz"), gz, gzlen / 2, 0644);
    free(gz);
    CHECK(gr_dataset_load(tpath("cut.csv.gz")) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "not a valid gzip file");
    CHECK(gr_dataset_load(tpath("absent.csv")) == NULL);
    CHECK(gr_errcode() == GR_ENOTFOUND);
}

static void test_split(void)
{
    gr_dataset *d = gr_dataset_load(DIGITS);
    if (!d) return;
    const size_t n = gr_dataset_rows(d);
    gr_dataset *tr = gr_dataset_split(d, GR_SPLIT_TRAIN, 0.8, 5);
    gr_dataset *te = gr_dataset_split(d, GR_SPLIT_TEST, 0.8, 5);
    gr_dataset *tr2 = gr_dataset_split(d, GR_SPLIT_TRAIN, 0.8, 5);
    gr_dataset *tr3 = gr_dataset_split(d, GR_SPLIT_TRAIN, 0.8, 6);
    gr_dataset *all = gr_dataset_split(d, GR_SPLIT_ALL, 0.8, 6);
    CHECK(tr && te && tr2 && tr3 && all);
    if (!tr || !te || !tr2 || !tr3 || !all) return;
    CHECK(gr_dataset_rows(tr) == 1438 && gr_dataset_rows(te) == n - 1438); /* round(0.8 n) */
    CHECK(gr_dataset_rows(all) == n);
    uint8_t *seen = calloc(n, 1);
    int ordered = 1, rows_match = 1;
    for (int part = 0; part < 2; part++) {
        gr_dataset *p = part ? te : tr;
        for (size_t i = 0; i < gr_dataset_rows(p); i++) {
            uint64_t id = gr_dataset_row_ids(p)[i];
            seen[id]++;
            if (i) ordered &= id > gr_dataset_row_ids(p)[i - 1];
            rows_match &= !memcmp(gr_dataset_x(p) + i * 64, gr_dataset_x(d) + id * 64, 64 * 4) &&
                          gr_dataset_y(p)[i] == gr_dataset_y(d)[id];
        }
    }
    int once = 1;
    for (size_t i = 0; i < n; i++) once &= seen[i] == 1;
    CHECK(once);       /* disjoint and complete */
    CHECK(ordered);    /* file order kept */
    CHECK(rows_match); /* the rows themselves */
    CHECK(!memcmp(gr_dataset_row_ids(tr), gr_dataset_row_ids(tr2), 1438 * 8));
    CHECK(memcmp(gr_dataset_row_ids(tr), gr_dataset_row_ids(tr3), 1438 * 8));
    /* every class in both parts, in about the same proportion */
    int ct[10] = {0};
    for (size_t i = 0; i < gr_dataset_rows(te); i++) ct[gr_dataset_y(te)[i]]++;
    for (int c = 0; c < 10; c++) CHECK_MSG(ct[c] > 15 && ct[c] < 60, "class %d: %d", c, ct[c]);
    CHECK(gr_dataset_classes(te) == 10 && gr_dataset_max(te) == 16);
    free(seen);
    gr_dataset_destroy(&tr);
    gr_dataset_destroy(&te);
    gr_dataset_destroy(&tr2);
    gr_dataset_destroy(&tr3);
    gr_dataset_destroy(&all);

    CHECK(gr_dataset_split(d, GR_SPLIT_TRAIN, 1.0, 0) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "must be in (0, 1)");
    CHECK(gr_dataset_split(d, GR_SPLIT_TEST, 0, 0) == NULL);
    CHECK(gr_dataset_split(d, GR_SPLIT_TEST, NAN, 0) == NULL);
    CHECK(gr_dataset_split(d, GR_SPLIT_TEST, 1e-4, 0) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "leaves the train part empty");
    gr_split s;
    CHECK(gr_split_parse("valid", &s) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "split 'valid': want train, test or all");
    CHECK(gr_split_parse("test", &s) == 0 && s == GR_SPLIT_TEST);
    gr_dataset_destroy(&d);
}

/* One 3x3 image 0..8 (row-major) and the expected result of each geometric
 * transform, worked out by hand from the definitions (np.rot90(img, -1),
 * np.fliplr, np.flipud). */
static void test_geometric(void)
{
    const char *csv = "0,1,2,3,4,5,6,7,8,1\n";
    static const struct {
        const char *name;
        float want[9];
    } cases[] = {
        {"identity", {0, 1, 2, 3, 4, 5, 6, 7, 8}}, {"rot90", {6, 3, 0, 7, 4, 1, 8, 5, 2}},
        {"rot180", {8, 7, 6, 5, 4, 3, 2, 1, 0}},   {"rot270", {2, 5, 8, 1, 4, 7, 0, 3, 6}},
        {"flip", {2, 1, 0, 5, 4, 3, 8, 7, 6}},     {"vflip", {6, 7, 8, 3, 4, 5, 0, 1, 2}},
        {"invert", {8, 7, 6, 5, 4, 3, 2, 1, 0}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        gr_dataset *d = parse(csv);
        gr_transform t;
        CHECK(gr_transform_parse(cases[k].name, &t) == 0);
        CHECK(!strcmp(gr_transform_name(t), cases[k].name));
        CHECK(gr_dataset_transform(d, t, 0, 0) == 0);
        CHECK_MSG(!memcmp(gr_dataset_x(d), cases[k].want, sizeof cases[k].want), "%s",
                  cases[k].name);
        CHECK(gr_dataset_y(d)[0] == 1);
        gr_dataset_destroy(&d);
    }
    /* four quarter turns are the identity; rot90 then flip is a transpose */
    gr_dataset *a = gr_dataset_load(DIGITS), *b = gr_dataset_load(DIGITS);
    if (!a || !b) return;
    for (int i = 0; i < 4; i++) gr_dataset_transform(a, GR_TF_ROT90, 0, 0);
    CHECK(!memcmp(gr_dataset_x(a), gr_dataset_x(b), 1797 * 64 * sizeof(float)));
    gr_dataset_transform(a, GR_TF_ROT90, 0, 0);
    gr_dataset_transform(a, GR_TF_FLIP, 0, 0);
    int transposed = 1;
    for (size_t r = 0; r < 1797; r++)
        for (int i = 0; i < 8; i++)
            for (int j = 0; j < 8; j++)
                transposed &=
                    gr_dataset_x(a)[r * 64 + i * 8 + j] == gr_dataset_x(b)[r * 64 + j * 8 + i];
    CHECK(transposed);
    gr_dataset_destroy(&a);
    gr_dataset_destroy(&b);

    gr_dataset *d = parse("1,2,3,0\n");
    CHECK(gr_dataset_transform(d, GR_TF_ROT90, 0, 0) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "transform 'rot90' needs square images (a square number of "
                                "features), not 3 features");
    CHECK(gr_dataset_transform(d, GR_TF_INVERT, 0, 0) == 0); /* any shape */
    const float inv[] = {3, 2, 1};
    CHECK(!memcmp(gr_dataset_x(d), inv, sizeof inv));
    gr_dataset_destroy(&d);
    gr_transform t;
    CHECK(gr_transform_parse("rotate", &t) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "transform 'rotate': want identity, rot90");
}

static void test_noise(void)
{
    gr_dataset *d = gr_dataset_load(DIGITS);
    gr_dataset *clean = gr_dataset_load(DIGITS);
    if (!d || !clean) return;
    CHECK(gr_dataset_transform(d, GR_TF_NOISE, 0.1, 4) == 0);
    /* pixels that stay clear of the clipping bounds 0 and 16 move by
     * N(0, (0.1*16)^2) */
    double s = 0, s2 = 0;
    size_t n = 0, clipped = 0;
    for (size_t i = 0; i < 1797 * 64; i++) {
        const float c = gr_dataset_x(clean)[i], v = gr_dataset_x(d)[i];
        CHECK(v >= 0 && v <= 16);
        if (v == 0 || v == 16) clipped++;
        if (c >= 6 && c <= 10) {
            s += v - c;
            s2 += (v - c) * (v - c);
            n++;
        }
    }
    const double mean = s / n, sd = sqrt(s2 / n - mean * mean);
    fprintf(stderr, "  noise on %zu mid-range pixels: mean %.4f sd %.4f (want 0, 1.6)\n", n, mean,
            sd);
    CHECK(n > 5000);
    CHECK_NEAR(mean, 0, 0.06);
    CHECK_NEAR(sd, 1.6, 0.05);
    CHECK(clipped > 0);
    /* a row's noise depends on its row id and the seed, not on the split */
    gr_dataset *te = gr_dataset_split(clean, GR_SPLIT_TEST, 0.5, 1);
    CHECK(gr_dataset_transform(te, GR_TF_NOISE, 0.1, 4) == 0);
    int same = 1;
    for (size_t i = 0; i < gr_dataset_rows(te); i++)
        same &= !memcmp(gr_dataset_x(te) + i * 64, gr_dataset_x(d) + gr_dataset_row_ids(te)[i] * 64,
                        64 * sizeof(float));
    CHECK(same);
    gr_dataset *o = gr_dataset_split(clean, GR_SPLIT_ALL, 0.5, 1);
    CHECK(gr_dataset_transform(o, GR_TF_NOISE, 0.1, 5) == 0);
    CHECK(memcmp(gr_dataset_x(o), gr_dataset_x(d), 64 * sizeof(float)));
    CHECK(gr_dataset_transform(o, GR_TF_NOISE, -1, 5) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "noise level -1 must be finite and >= 0");
    gr_dataset_destroy(&o);
    gr_dataset_destroy(&te);
    gr_dataset_destroy(&d);
    gr_dataset_destroy(&clean);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_dataset.XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    RUN(test_parse_ok);
    RUN(test_parse_errors);
    RUN(test_digits_gz);
    RUN(test_split);
    RUN(test_geometric);
    RUN(test_noise);
    gr_fs_rmrf(tmpdir);
    TEST_MAIN_END();
}
