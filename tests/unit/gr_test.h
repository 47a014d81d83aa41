/* gr_test: a minimal unit-test harness. Each check prints its location on
 * failure; main() returns non-zero if any failed. */
#ifndef GR_TEST_H
#define GR_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int gr_test_failed, gr_test_passed;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (cond) gr_test_passed++;                                                      \
        else {                                                                           \
            gr_test_failed++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                                \
    } while (0)

#define CHECK_MSG(cond, ...)                                                             \
    do {                                                                                 \
        if (cond) gr_test_passed++;                                                      \
        else {                                                                           \
            gr_test_failed++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                               \
    CHECK_MSG((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a), (long long)(b))

#define CHECK_NEAR(a, b, tol)                                                            \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %.3g)",         \
              (double)(a), (double)(b), (double)(tol))

/* Checks that s contains sub (error messages name the file and rule). */
#define CHECK_CONTAINS(s, sub)                                                           \
    CHECK_MSG((s) && strstr((s), (sub)), "\"%s\" does not contain \"%s\"", (s) ? (s) : "(null)", (sub))

#define RUN(fn)                                                                          \
    do {                                                                                 \
        int before_ = gr_test_failed;                                                    \
        fn();                                                                            \
        fprintf(stderr, "%s %s\n", gr_test_failed == before_ ? "ok  " : "FAIL", #fn);     \
    } while (0)

#define TEST_MAIN_END()                                                                  \
    do {                                                                                 \
        printf("%d passed, %d failed\n", gr_test_passed, gr_test_failed);                \
        return gr_test_failed ? 1 : 0;                                                   \
    } while (0)

/* Path of a fixture: $GRAFT_FIXTURES/rel (tests run under CTest set it). */
static inline const char *fixture(const char *rel)
{
    static char buf[4][4096];
    static int k;
    const char *root = getenv("GRAFT_FIXTURES");
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", root ? root : "tests/fixtures", rel);
    return b;
}

#endif
