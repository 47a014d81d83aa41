/* test_sha256: SHA-256 against the FIPS 180-2 known answers and sha256sum,
 * streaming in odd chunk sizes, file hashing and id parsing. */
#include "gr_err.h"
#include "gr_sha256.h"
#include "gr_test.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void hex_of(const void *p, size_t n, char hex[GR_SHA256_HEXSZ])
{
    uint8_t d[GR_SHA256_LEN];
    CHECK(gr_sha256_buf(p, n, d) == 0);
    gr_sha256_hex(d, hex);
}

/* FIPS 180-2 appendix B examples plus the empty string. */
static void test_known_answers(void)
{
    char hex[GR_SHA256_HEXSZ];
    hex_of("", 0, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    hex_of("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(m448, strlen(m448), hex);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    /* One million 'a', fed in 997-byte pieces through the streaming API. */
    gr_sha256 *h = gr_sha256_new();
    CHECK(h != NULL);
    char a[997];
    memset(a, 'a', sizeof a);
    size_t left = 1000000;
    while (left) {
        size_t k = left < sizeof a ? left : sizeof a;
        CHECK(gr_sha256_update(h, a, k) == 0);
        left -= k;
    }
    uint8_t d[GR_SHA256_LEN];
    CHECK(gr_sha256_final(h, d) == 0);
    gr_sha256_hex(d, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
    /* reset gives a fresh context */
    CHECK(gr_sha256_reset(h) == 0);
    CHECK(gr_sha256_update(h, "abc", 3) == 0);
    CHECK(gr_sha256_final(h, d) == 0);
    gr_sha256_hex(d, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    gr_sha256_destroy(&h);
    CHECK(h == NULL);
    gr_sha256_destroy(&h); /* NULL is fine */
}

/* Random data: streaming with random chunk sizes equals one-shot, and the
 * file digest equals coreutils' sha256sum (an independent implementation). */
static void test_stream_and_file(void)
{
    size_t n = 3 * 1024 * 1024 + 17;
    unsigned char *buf = malloc(n);
    CHECK(buf != NULL);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    uint8_t one[GR_SHA256_LEN], two[GR_SHA256_LEN], three[GR_SHA256_LEN];
    CHECK(gr_sha256_buf(buf, n, one) == 0);
    gr_sha256 *h = gr_sha256_new();
    for (size_t i = 0; i < n;) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t k = 1 + (size_t)(x % 70000);
        if (k > n - i) k = n - i;
        CHECK(gr_sha256_update(h, buf + i, k) == 0);
        i += k;
    }
    CHECK(gr_sha256_final(h, two) == 0);
    gr_sha256_destroy(&h);
    CHECK(!memcmp(one, two, GR_SHA256_LEN));

    char path[] = "/tmp/graft-test-sha256-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, buf, n) == (ssize_t)n);
    close(fd);
    uint64_t size = 0;
    CHECK(gr_sha256_file(path, three, &size) == 0);
    CHECK(size == n);
    CHECK(!memcmp(one, three, GR_SHA256_LEN));

    char cmd[256], line[256] = "", hex[GR_SHA256_HEXSZ];
    snprintf(cmd, sizeof cmd, "sha256sum %s", path);
    FILE *p = popen(cmd, "r");
    CHECK(p && fgets(line, sizeof line, p));
    if (p) pclose(p);
    gr_sha256_hex(one, hex);
    CHECK_MSG(!strncmp(line, hex, 64), "sha256sum says %.64s, we say %s", line, hex);
    unlink(path);

    CHECK(gr_sha256_file("/nonexistent/graft", three, NULL) == GR_ENOTFOUND);
    CHECK_CONTAINS(gr_errmsg(), "/nonexistent/graft");
    free(buf);
}

static void test_ids(void)
{
    const char *good = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    char hex[GR_SHA256_HEXSZ];
    CHECK(gr_id_parse(good, hex) == 0);
    CHECK(!strcmp(hex, good + 7));
    uint8_t d[GR_SHA256_LEN];
    CHECK(gr_sha256_from_hex(hex, 64, d) == 0);
    char id[GR_ID_SZ];
    gr_sha256_id(d, id);
    CHECK(!strcmp(id, good));
    const char *bad[] = {
        "",
        "sha256:",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015adf",
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ag",
        "sha512:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "sha256:../../../../etc/passwd",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(gr_id_parse(bad[i], NULL) == GR_EINVAL, "accepted '%s'", bad[i]);
        CHECK_CONTAINS(gr_errmsg(), "not an artifact id");
    }
    CHECK(gr_sha256_from_hex("zz", 2, d) == GR_EINVAL);
    CHECK(gr_sha256_from_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", 64,
                             d) == 0);
    gr_sha256_hex(d, hex);
    CHECK(!strcmp(hex, good + 7));
}

int main(void)
{
    RUN(test_known_answers);
    RUN(test_stream_and_file);
    RUN(test_ids);
    TEST_MAIN_END();
}
