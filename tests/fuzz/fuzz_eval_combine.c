/* fuzz_eval_combine: hostile shard results for `evaluate task: combine`. The
 * input is split at its first NUL byte into two result.json texts, written
 * to files and joined (both together, and the first alone). A join that is
 * accepted must produce a result.json that parses and covers its units. */
#include "evaluate/gr_evaluate.h"
#include "gr_json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/fuzz_eval_combine-XXXXXX";
static char pa[64], pb[64];

static int put(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    if (n && fwrite(p, 1, n, f) != n) n = 0;
    return fclose(f);
}

static void join(const char *const *paths, size_t n)
{
    gr_buf res = {0}, met = {0};
    if (!gr_eval_combine(paths, n, &res, &met)) {
        gr_json *r = gr_json_parse(res.data, res.len, "result");
        gr_json *m = gr_json_parse(met.data, met.len, "metrics");
        if (!r || !m) abort();
        if (gr_json_get_int(r, "first", -1) != 0 ||
            gr_json_get_int(r, "count", -1) != gr_json_get_int(r, "total", -2))
            abort();
        gr_json_free(r);
        gr_json_free(m);
    }
    gr_buf_free(&res);
    gr_buf_free(&met);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pa[0]) {
        if (!mkdtemp(dir)) abort();
        snprintf(pa, sizeof pa, "%s/a.json", dir);
        snprintf(pb, sizeof pb, "%s/b.json", dir);
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t na = nul ? (size_t)(nul - data) : size;
    if (put(pa, data, na) || put(pb, nul ? nul + 1 : data, nul ? size - na - 1 : 0)) return 0;
    const char *both[2] = {pa, pb};
    join(both, 2);
    join(both, 1);
    return 0;
}
