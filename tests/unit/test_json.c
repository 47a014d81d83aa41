/* Tests for gr_json (strict parser) and gr_buf's JSON writers. */
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_json.h"
#include "gr_test.h"

static gr_json *P(const char *s)
{
    return gr_json_parse(s, strlen(s), "t.json");
}

static void test_values(void)
{
    gr_json *j = P(" {\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\ud83d\\ude00\"], \"b\": {}}\n");
    CHECK(j && j->type == GR_JSON_OBJ && j->len == 2);
    const gr_json *a = gr_json_get(j, "a");
    CHECK(a && a->type == GR_JSON_ARR && a->len == 6);
    CHECK(a->items[0]->is_int && a->items[0]->i == 1);
    CHECK(!a->items[1]->is_int && a->items[1]->num == -2500.0);
    CHECK(a->items[2]->type == GR_JSON_BOOL && a->items[2]->boolean);
    CHECK(a->items[4]->type == GR_JSON_NULL);
    CHECK(!strcmp(a->items[5]->str, "x\xc3\xa9\xf0\x9f\x98\x80"));
    CHECK(gr_json_get_int(j, "zz", 7) == 7);
    gr_json_free(j);
    j = P("9223372036854775807");
    CHECK(j && j->is_int && j->i == INT64_MAX);
    gr_json_free(j);
    j = P("9223372036854775808");
    CHECK(j && !j->is_int);
    gr_json_free(j);
}

static void test_rejects(void)
{
    const char *bad[] = {"",          "{",           "{\"a\":1,}",  "[1,]",        "01",
                         "1.",        "-",           "\"\\x\"",     "\"\x01\"",    "\"\xff\"",
                         "\"\xc0\xaf\"", "\"\\ud800\"", "{\"a\":1,\"a\":2}", "[1] 2", "nul",
                         "{1:2}",     "\"\xed\xa0\x80\"", "21e555", "-1e400", "[1]\0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = i == sizeof bad / sizeof bad[0] - 1 ? 4 : strlen(bad[i]);
        gr_json *j = gr_json_parse(bad[i], n, "t.json");
        CHECK_MSG(j == NULL, "accepted case %zu", i);
        if (!j) CHECK_CONTAINS(gr_errmsg(), "t.json: invalid JSON at line 1");
        gr_json_free(j);
    }
    /* deep nesting is refused, not a stack overflow */
    char deep[2000];
    memset(deep, '[', sizeof deep);
    gr_json *j = gr_json_parse(deep, sizeof deep, NULL);
    CHECK(j == NULL);
    CHECK_CONTAINS(gr_errmsg(), "too deep");
    /* line numbers */
    j = P("{\n\"a\": 1,\n\"b\": x}");
    CHECK(j == NULL);
    CHECK_CONTAINS(gr_errmsg(), "line 3");
}

static void test_many_keys_dup(void)
{
    gr_buf b = {0};
    gr_buf_putc(&b, '{');
    for (int i = 0; i < 1000; i++) gr_buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i % 999, i);
    gr_buf_putc(&b, '}');
    gr_json *j = gr_json_parse(b.data, b.len, NULL);
    CHECK(j == NULL);
    CHECK_CONTAINS(gr_errmsg(), "duplicate");
    gr_buf_free(&b);
}

static void test_writer(void)
{
    gr_buf b = {0};
    gr_buf_json_str(&b, "a\"b\\c\n\x01\xc3\xa9", 9);
    CHECK(!strcmp(b.data, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\""));
    gr_buf_reset(&b);
    gr_buf_json_num(&b, 0.1);
    gr_buf_putc(&b, ' ');
    gr_buf_json_num(&b, 3);
    gr_buf_putc(&b, ' ');
    gr_buf_json_num(&b, NAN);
    CHECK(!strcmp(b.data, "0.1 3 null"));
    /* magnitudes beyond long long are printed, not cast (UB) */
    gr_buf_reset(&b);
    gr_buf_json_num(&b, 1e300);
    gr_buf_putc(&b, ' ');
    gr_buf_json_num(&b, -9.3e18);
    CHECK(!strcmp(b.data, "1e+300 -9.3e+18"));
    gr_buf_reset(&b);
    gr_buf_json_num(&b, 0.1);
    gr_json *j = gr_json_parse(b.data, 3, NULL);
    CHECK(j && j->num == 0.1);
    gr_json_free(j);
    gr_buf_free(&b);
}

int main(void)
{
    RUN(test_values);
    RUN(test_rejects);
    RUN(test_many_keys_dup);
    RUN(test_writer);
    TEST_MAIN_END();
}
