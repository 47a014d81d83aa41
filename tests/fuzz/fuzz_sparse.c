/* fuzz_sparse: arbitrary bytes as a safetensors file opened by the sparse
 * delta reader (gr_sparse_open), every logical tensor read whole and in two
 * pieces; the pieces must equal the whole. */
#include "gr_err.h"
#include "gr_sparse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ELEMS (1u << 22)

static char path[64];

static void read_all(gr_sparse *s)
{
    for (size_t i = 0; i < gr_sparse_count(s); i++) {
        const gr_sparse_tensor *t = gr_sparse_at(s, i);
        if (t->nelem > MAX_ELEMS || !gr_dtype_is_float(t->dtype)) continue;
        uint64_t n = t->nelem;
        float *a = malloc((n + 1) * sizeof *a), *b = malloc((n + 1) * sizeof *b);
        if (!a || !b) abort();
        int rc = gr_sparse_read_f32(s, t, 0, n, a);
        if (rc == 0) {
            uint64_t h = n / 3;
            if (gr_sparse_read_f32(s, t, 0, h, b) || gr_sparse_read_f32(s, t, h, n - h, b + h))
                abort(); /* a tensor that reads whole reads in pieces */
            if (memcmp(a, b, n * sizeof *a)) abort();
        } else if (rc != GR_EFORMAT && rc != GR_EUNSUP) {
            abort();
        }
        if (gr_sparse_read_f32(s, t, n, 1, a) != GR_EINVAL) abort(); /* past the end */
        free(a);
        free(b);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz_sparse.%ld.safetensors", (long)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size && fwrite(data, 1, size, f) != size) {
        fclose(f);
        return 0;
    }
    fclose(f);
    gr_sparse *s = gr_sparse_open(path);
    if (s) {
        read_all(s);
        gr_sparse_close(&s);
    } else if (!gr_errmsg()[0]) {
        abort(); /* every rejection says why */
    }
    unlink(path);
    return 0;
}
