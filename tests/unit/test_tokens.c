/* Tests for gr_tokens: .bin and .jsonl token data, windows (every target
 * scored exactly once), choice items, and the errors bad data files get. */
#include "gr_err.h"
#include "gr_rng.h"
#include "gr_test.h"
#include "gr_tokens.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/graft-tok-XXXXXX";

static const char *tpath(const char *name)
{
    static char p[4][4200];
    static int k;
    char *b = p[k++ & 3];
    snprintf(b, sizeof p[0], "%s/%s", tmpdir, name);
    return b;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void test_bin(void)
{
    /* little-endian bytes, independent of the host */
    const unsigned char u16[] = {1, 0, 0x34, 0x12, 7, 0, 0xff, 0};
    write_file(tpath("a.bin"), u16, sizeof u16);
    gr_tokens *t = gr_tokens_open(tpath("a.bin"), "uint16", 0x1235);
    CHECK(t != NULL);
    if (t) {
        CHECK(gr_tokens_count(t) == 1 && gr_tokens_len(t, 0) == 4 && gr_tokens_total(t) == 4);
        CHECK(gr_tokens_at(t, 0, 0) == 1 && gr_tokens_at(t, 0, 1) == 0x1234);
        CHECK(gr_tokens_at(t, 0, 3) == 255);
    }
    gr_tokens_close(&t);
    gr_tokens_close(&t);
    t = gr_tokens_open(tpath("a.bin"), NULL, 0); /* default uint16, unchecked */
    CHECK(t && gr_tokens_len(t, 0) == 4);
    gr_tokens_close(&t);
    t = gr_tokens_open(tpath("a.bin"), "uint32", 0);
    CHECK(t && gr_tokens_len(t, 0) == 2 && gr_tokens_at(t, 0, 0) == 0x12340001u);
    gr_tokens_close(&t);

    t = gr_tokens_open(tpath("a.bin"), "uint16", 0x1234); /* 0x1234 is not < 0x1234 */
    CHECK(t == NULL && gr_errcode() == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "a.bin: token 1 (byte offset 2): id 4660 is >= the vocabulary "
                                "size 4660");
    write_file(tpath("odd.bin"), u16, 3);
    CHECK(gr_tokens_open(tpath("odd.bin"), "uint16", 0) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "size 3 is not a multiple of 2 bytes");
    write_file(tpath("six.bin"), u16, 6);
    CHECK(gr_tokens_open(tpath("six.bin"), "uint32", 0) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "not a multiple of 4 bytes (token_dtype uint32)");
    write_file(tpath("empty.bin"), u16, 0);
    CHECK(gr_tokens_open(tpath("empty.bin"), "uint16", 0) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "empty.bin: empty data file");
    write_file(tpath("one.bin"), u16, 2);
    CHECK(gr_tokens_open(tpath("one.bin"), "uint16", 0) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "at least 2");
    CHECK(gr_tokens_open(tpath("a.bin"), "int8", 0) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "token_dtype 'int8' is not supported");
    CHECK(gr_tokens_open(tpath("missing.bin"), "uint16", 0) == NULL);
    CHECK(gr_errcode() == GR_ENOTFOUND);
}

static void test_jsonl(void)
{
    const char *ok =
        "[1, 2, 3]\n\n  \r\n[4,5]\r\n[6, 7, 8, 9]"; /* blank lines, CRLF, no final LF */
    gr_tokens *t = gr_tokens_parse_jsonl(ok, strlen(ok), "d.jsonl", 10);
    CHECK(t && gr_tokens_count(t) == 3 && gr_tokens_total(t) == 9);
    if (t) {
        CHECK(gr_tokens_len(t, 0) == 3 && gr_tokens_len(t, 1) == 2 && gr_tokens_len(t, 2) == 4);
        CHECK(gr_tokens_at(t, 1, 1) == 5 && gr_tokens_at(t, 2, 3) == 9);
    }
    gr_tokens_close(&t);
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"[1, 2]\n[3, 10]\n",
         "d.jsonl:2: sequence item 1: token id 10 is >= the vocabulary size 10"},
        {"[1, 2]\n\n[3, -1]\n", "d.jsonl:3: sequence item 1 is not a token id"},
        {"[1, 2.5]\n", "d.jsonl:1: sequence item 1 is not a token id"},
        {"[1, \"2\"]\n", "d.jsonl:1: sequence item 1 is not a token id"},
        {"{\"ids\": [1, 2]}\n", "d.jsonl:1: sequence must be an array of token ids, not object"},
        {"[1, 2]\n[3]\n", "d.jsonl:2: a sequence needs at least 2 tokens (has 1)"},
        {"[1, 2]\n[3, 4\n", "d.jsonl:2"},
        {"", "d.jsonl: empty data file"},
        {"\n \n", "d.jsonl: empty data file"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = gr_tokens_parse_jsonl(bad[i].text, strlen(bad[i].text), "d.jsonl", 10);
        CHECK_MSG(t == NULL, "case %zu accepted", i);
        CHECK_CONTAINS(gr_errmsg(), bad[i].msg);
        gr_tokens_close(&t);
    }
    write_file(tpath("e.jsonl"), "", 0);
    CHECK(gr_tokens_open(tpath("e.jsonl"), NULL, 10) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "e.jsonl: empty data file");
    write_file(tpath("f.jsonl"), "[1,2]\n[3,4,5]\n", 14);
    t = gr_tokens_open(tpath("f.jsonl"), "uint32", 10); /* token_dtype ignored for jsonl */
    CHECK(t && gr_tokens_count(t) == 2);
    gr_tokens_close(&t);
}

/* Windows score every target exactly once when stride < seq_len, never see
 * more than seq_len tokens, and follow the documented layout. */
static void test_windows(void)
{
    unsigned char ids[20] = {0};
    for (int i = 0; i < 10; i++) ids[2 * i] = (unsigned char)i; /* uint16 little-endian */
    write_file(tpath("w.bin"), ids, sizeof ids);
    gr_tokens *t = gr_tokens_open(tpath("w.bin"), "uint16", 0);
    gr_window *w = NULL;
    size_t n = 0;
    CHECK(gr_tokens_windows(t, 4, 4, &w, &n) == 0 && n == 3);
    if (n == 3) {
        CHECK(w[0].start == 0 && w[0].len == 4 && w[0].first == 0);
        CHECK(w[1].start == 4 && w[1].len == 4 && w[1].first == 0);
        CHECK(w[2].start == 8 && w[2].len == 2 && w[2].first == 0);
    }
    free(w);
    CHECK(gr_tokens_windows(t, 4, 2, &w, &n) == 0 && n == 4);
    if (n == 4) {
        CHECK(w[1].start == 2 && w[1].len == 4 && w[1].first == 1); /* targets 4, 5 */
        CHECK(w[3].start == 6 && w[3].len == 4 && w[3].first == 1); /* targets 8, 9 */
        int32_t got[4];
        gr_tokens_get(t, &w[3], got);
        CHECK(got[0] == 6 && got[3] == 9);
    }
    free(w);
    CHECK(gr_tokens_windows(t, 1, 1, &w, &n) == GR_EINVAL);
    CHECK(gr_tokens_windows(t, 4, 5, &w, &n) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "stride must be in [1, seq_len=4]");
    CHECK(gr_tokens_windows(t, 4, 0, &w, &n) == GR_EINVAL);
    gr_tokens_close(&t);

    /* random documents, lengths and strides */
    uint64_t key = gr_rng_key(3, "windows", 0);
    for (int trial = 0; trial < 200; trial++) {
        char text[8192];
        size_t k = 0;
        int docs = 1 + (int)(gr_rng_uniform(key, 4 * trial) * 4), lens[4];
        for (int d = 0; d < docs; d++) {
            lens[d] = 2 + (int)(gr_rng_uniform(key, 1000 + 8 * trial + d) * 60);
            k += (size_t)snprintf(text + k, sizeof text - k, "[");
            for (int i = 0; i < lens[d]; i++)
                k += (size_t)snprintf(text + k, sizeof text - k, "%s%d", i ? "," : "", i);
            k += (size_t)snprintf(text + k, sizeof text - k, "]\n");
        }
        int seq_len = 2 + (int)(gr_rng_uniform(key, 5000 + trial) * 20);
        int stride = 1 + (int)(gr_rng_uniform(key, 9000 + trial) * seq_len);
        t = gr_tokens_parse_jsonl(text, k, "r.jsonl", 0);
        CHECK(t && gr_tokens_windows(t, seq_len, stride, &w, &n) == 0);
        int counts[4][64] = {{0}}, ok = 1;
        for (size_t i = 0; i < n; i++) {
            ok &= w[i].len <= seq_len && w[i].len >= 2 && w[i].first >= 0 &&
                  w[i].first < w[i].len - 1 && w[i].start % (uint64_t)stride == 0;
            ok &= w[i].start + (uint64_t)w[i].len <= gr_tokens_len(t, w[i].seq);
            for (int p = w[i].first + 1; p < w[i].len; p++)
                counts[w[i].seq][w[i].start + (uint64_t)p]++;
        }
        for (int d = 0; d < docs; d++)
            for (int p = 1; p < lens[d]; p++) {
                /* the first token of a window has no context inside it */
                int want = stride < seq_len || p % stride ? 1 : 0;
                ok &= counts[d][p] == want;
            }
        CHECK_MSG(ok, "trial %d: docs %d seq_len %d stride %d", trial, docs, seq_len, stride);
        free(w);
        gr_tokens_close(&t);
    }
}

static void test_choices(void)
{
    const char *ok = "{\"context\": [1, 2], \"choices\": [[3], [4, 5]], \"label\": 1, \"id\": 7}\n"
                     "\n"
                     "{\"label\": 0, \"choices\": [[9, 9, 9]], \"context\": [0]}\n";
    gr_choices *c = gr_choices_parse(ok, strlen(ok), "c.jsonl", 10);
    CHECK(c && gr_choices_count(c) == 2);
    if (c) {
        const gr_choice_item *a = gr_choices_item(c, 0), *b = gr_choices_item(c, 1);
        CHECK(a->line == 1 && a->label == 1 && a->context_len == 2 && a->context[1] == 2);
        CHECK(a->nchoices == 2 && a->choice_len[0] == 1 && a->choice_len[1] == 2);
        CHECK(a->choice[0][0] == 3 && a->choice[1][1] == 5);
        CHECK(b->line == 3 && b->label == 0 && b->nchoices == 1 && b->choice_len[0] == 3);
        CHECK(b->context[0] == 0 && b->choice[0][2] == 9);
    }
    gr_choices_close(&c);
    gr_choices_close(&c);
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"{\"context\": [1], \"choices\": [[3]], \"label\": 1}",
         "c.jsonl:1: label must be an "
         "integer index into choices [0, 1)"},
        {"{\"context\": [1], \"choices\": [[3]]}", "c.jsonl:1: missing field 'label'"},
        {"{\"context\": [], \"choices\": [[3]], \"label\": 0}", "context must hold at least one"},
        {"{\"context\": [1], \"choices\": [], \"label\": 0}", "choices must be a non-empty array"},
        {"{\"context\": [1], \"choices\": [[1], []], \"label\": 0}",
         "c.jsonl:1: choices[1] must hold at least one token"},
        {"{\"context\": [1], \"choices\": [[1], [2, 10]], \"label\": 0}",
         "c.jsonl:1: choices[1] item 1: token id 10 is >= the vocabulary size 10"},
        {"{\"context\": [1], \"choices\": [[1]], \"label\": 0}\n{\"context\": [10], \"choices\": "
         "[[1]], \"label\": 0}",
         "c.jsonl:2: context item 0: token id 10 is >= the vocabulary size 10"},
        {"{\"context\": [1], \"choices\": [[1.5]], \"label\": 0}",
         "choices[0] item 0 is not a token"},
        {"[1, 2]", "c.jsonl:1: each line must be an object"},
        {"{\"context\": [1], \"choices\": [[1]], \"label\": \"0\"}", "label must be an integer"},
        {"", "c.jsonl: empty data file"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = gr_choices_parse(bad[i].text, strlen(bad[i].text), "c.jsonl", 10);
        CHECK_MSG(c == NULL, "case %zu accepted", i);
        CHECK_CONTAINS(gr_errmsg(), bad[i].msg);
        gr_choices_close(&c);
    }
    write_file(tpath("c.jsonl"), ok, strlen(ok));
    c = gr_choices_open(tpath("c.jsonl"), 10);
    CHECK(c && gr_choices_count(c) == 2);
    gr_choices_close(&c);
    write_file(tpath("ce.jsonl"), "", 0);
    CHECK(gr_choices_open(tpath("ce.jsonl"), 10) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "ce.jsonl: empty data file");
}

int main(void)
{
    if (!mkdtemp(tmpdir)) return 1;
    RUN(test_bin);
    RUN(test_jsonl);
    RUN(test_windows);
    RUN(test_choices);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    TEST_MAIN_END();
}
