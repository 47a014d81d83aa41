/* Tests for gr_err: messages, context prefixes, exit statuses, and the
 * one-line rule (control characters from quoted input are escaped). */
#include "gr_err.h"
#include "gr_test.h"

static void test_messages(void)
{
    CHECK(gr_seterr(GR_EINVAL, "%s: tensor '%s': bad", "x.safetensors", "a") == GR_EINVAL);
    CHECK(!strcmp(gr_errmsg(), "x.safetensors: tensor 'a': bad"));
    CHECK(gr_errcode() == GR_EINVAL);
    CHECK(gr_adderr(GR_EIO, "stage %d", 3) == GR_EIO);
    CHECK(!strcmp(gr_errmsg(), "stage 3: x.safetensors: tensor 'a': bad"));
    gr_clearerr();
    CHECK(!strcmp(gr_errmsg(), "ok"));
    CHECK(gr_exit_status(GR_EINVAL) == 2 && gr_exit_status(GR_EFORMAT) == 2);
    CHECK(gr_exit_status(GR_EIO) == 1 && gr_exit_status(0) == 0);
    CHECK(gr_err_retryable(GR_ENET) && !gr_err_retryable(GR_EINVAL));
}

static void test_one_line(void)
{
    /* found by fuzz_mergekit: a YAML scalar spanning lines inside a message */
    gr_seterr(GR_EINVAL, "c.yml:1: merge_method '%s' is not supported", "ties\n- mode\t\x01");
    CHECK(!strcmp(gr_errmsg(), "c.yml:1: merge_method 'ties\\n- mode\\t\\x01' is not supported"));
    gr_adderr(GR_EINVAL, "a\r%s", "b");
    CHECK(strchr(gr_errmsg(), '\n') == NULL && strchr(gr_errmsg(), '\r') == NULL);
    CHECK_CONTAINS(gr_errmsg(), "a\\rb: c.yml:1:");
    /* a message at the size limit stays NUL-terminated and one line */
    char big[3000];
    memset(big, '\n', sizeof big - 1);
    big[sizeof big - 1] = 0;
    gr_seterr(GR_EINVAL, "%s", big);
    CHECK(strlen(gr_errmsg()) < 1024 && strchr(gr_errmsg(), '\n') == NULL);
}

int main(void)
{
    RUN(test_messages);
    RUN(test_one_line);
    TEST_MAIN_END();
}
