/* test_broker_resolve: stage resolution without Redis — dependency stage ids
 * replaced by their output ids, the input list, `_inputs` for fan-in ops,
 * errors naming the reference, and the memo key checked against SHA-256 of
 * the documented preimage computed here with OpenSSL. */
#include "gr_test.h"

#include "gr_err.h"
#include "gr_json.h"
#include "gr_op.h"
#include "gr_resolve.h"

#include <openssl/evp.h>

#define ID_A "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define ID_B "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define ID_C "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

static void sha256_hex(const char *s, char hex[65])
{
    unsigned char d[32];
    unsigned int n = 0;
    EVP_Digest(s, strlen(s), d, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static void test_substitution(void)
{
    gr_resolve_dep deps[2] = {
        {"a", "noop", "{}", "{\"n\":1}", "{\"out\":\"" ID_A "\"}"},
        {"b", "echo", "{\"inputs\":[\"" ID_A "\"],\"_inputs\":[{}]}", "null",
         "{\"out\":\"" ID_B "\"}"},
    };
    gr_resolved r;
    int rc = gr_resolve_stage("echo", "{\"inputs\":[\"a\",\"" ID_C "\",\"b\"],\"input\":\"b\"}",
                              deps, 2, &r);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    if (rc) return;
    gr_json *p = gr_json_parse(r.rparams, strlen(r.rparams), "rparams");
    const gr_json *ins = gr_json_get(p, "inputs");
    CHECK(ins && ins->len == 3);
    CHECK(ins && !strcmp(ins->items[0]->str, ID_A) && !strcmp(ins->items[1]->str, ID_C) &&
          !strcmp(ins->items[2]->str, ID_B));
    CHECK(!strcmp(gr_json_get_str(p, "input", ""), ID_B));
    /* every input once, in order of first use */
    CHECK(!strcmp(r.inputs, "[\"" ID_A "\",\"" ID_C "\",\"" ID_B "\"]"));
    const gr_json *fan = gr_json_get(p, "_inputs");
    CHECK(fan && fan->type == GR_JSON_ARR && fan->len == 3);
    if (fan && fan->len == 3) {
        CHECK(!strcmp(gr_json_get_str(fan->items[0], "stage", ""), "a"));
        CHECK(gr_json_get_int(gr_json_get(fan->items[0], "metrics"), "n", 0) == 1);
        CHECK(gr_json_get(fan->items[1], "stage")->type == GR_JSON_NULL); /* a direct artifact */
        CHECK(!strcmp(gr_json_get_str(fan->items[1], "out", ""), ID_C));
        /* an upstream's own reserved keys are not passed on; null metrics become {} */
        const gr_json *bp = gr_json_get(fan->items[2], "params");
        CHECK(bp && !gr_json_get(bp, "_inputs") && gr_json_get(bp, "inputs"));
        CHECK(gr_json_get(fan->items[2], "metrics")->type == GR_JSON_OBJ);
    }
    gr_json_free(p);
    gr_resolved_clear(&r);
}

static void test_memo_key(void)
{
    gr_resolve_dep deps[1] = {{"a", "noop", "{}", "{}", "{\"out\":\"" ID_A "\"}"}};
    gr_resolved r1, r2, r3;
    /* key order and whitespace do not matter; values do */
    CHECK(gr_resolve_stage("sleep", "{\"seconds\":2,\"input\":\"a\"}", deps, 1, &r1) == 0);
    CHECK(gr_resolve_stage("sleep", "{ \"input\" : \"a\", \"seconds\" : 2 }", deps, 1, &r2) == 0);
    CHECK(gr_resolve_stage("sleep", "{\"seconds\":3,\"input\":\"a\"}", deps, 1, &r3) == 0);
    CHECK(!strcmp(r1.memo, r2.memo));
    CHECK(strcmp(r1.memo, r3.memo));
    /* the documented preimage: graft-memo/1, op, version, canonical params
     * (keys sorted, no '_' keys), input ids, newline-separated */
    const gr_op *op = gr_op_find("sleep");
    CHECK(op != NULL);
    if (op) {
        char pre[512], want[65];
        snprintf(pre, sizeof pre, "graft-memo/1\nsleep\n%d\n{\"input\":\"%s\",\"seconds\":2}\n%s",
                 op->version, ID_A, ID_A);
        sha256_hex(pre, want);
        CHECK_MSG(!strcmp(r1.memo, want), "memo %s, expected %s", r1.memo, want);
    }
    /* another upstream output changes the key */
    gr_resolve_dep deps2[1] = {{"a", "noop", "{}", "{}", "{\"out\":\"" ID_B "\"}"}};
    gr_resolved r4;
    CHECK(gr_resolve_stage("sleep", "{\"seconds\":2,\"input\":\"a\"}", deps2, 1, &r4) == 0);
    CHECK(strcmp(r1.memo, r4.memo));
    /* so does the op */
    gr_resolved r5;
    CHECK(gr_resolve_stage("noop", "{\"input\":\"a\"}", deps, 1, &r5) == 0);
    gr_resolved r6;
    CHECK(gr_resolve_stage("echo", "{\"input\":\"a\"}", deps, 1, &r6) == 0);
    CHECK(strcmp(r5.memo, r6.memo));
    gr_resolved_clear(&r1);
    gr_resolved_clear(&r2);
    gr_resolved_clear(&r3);
    gr_resolved_clear(&r4);
    gr_resolved_clear(&r5);
    gr_resolved_clear(&r6);
}

static void test_errors(void)
{
    gr_resolved r;
    gr_resolve_dep nout[1] = {{"a", "noop", "{}", "{}", "{\"log\":\"" ID_A "\"}"}};
    CHECK(gr_resolve_stage("noop", "{\"input\":\"a\"}", nout, 1, &r) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "'a' has no output 'out'");
    CHECK(gr_resolve_stage("noop", "{\"input\":\"zz\"}", nout, 1, &r) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "'zz'");
    CHECK(gr_resolve_stage("nosuchop", "{}", NULL, 0, &r) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "unknown op 'nosuchop'");
    CHECK(gr_resolve_stage("noop", "{\"input\":", NULL, 0, &r) != 0);
    gr_resolve_dep badout[1] = {{"a", "noop", "{}", "{}", "{\"out\":\"sha256:xyz\"}"}};
    CHECK(gr_resolve_stage("noop", "{\"input\":\"a\"}", badout, 1, &r) == GR_EINVAL);
    CHECK(r.rparams == NULL && r.inputs == NULL);
}

int main(void)
{
    RUN(test_substitution);
    RUN(test_memo_key);
    RUN(test_errors);
    TEST_MAIN_END();
}
