/* fuzz_st_header: arbitrary bytes as a whole safetensors file (validated from
 * memory, then every tensor touched) and as a bare header. Any crash, sanitizer
 * report or broken invariant is a finding. */
#include "gr_st.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gr_st *st = gr_st_open_mem("fuzz", data, size);
    if (st) {
        /* accepted: 8 + N + the tensors' bytes is exactly the input */
        uint64_t n = 0, sum = 0;
        for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
        for (size_t i = 0; i < gr_st_count(st); i++) {
            const gr_tensor *t = gr_st_tensor(st, i);
            const unsigned char *p = t->data;
            if (p < data + 8 + n || p + t->nbytes > data + size) __builtin_trap();
            if (t->nbytes) sink += p[0] + p[t->nbytes - 1]; /* ASan sees any stray pointer */
            if (gr_st_find(st, t->name) != t) __builtin_trap();
            if (t->nbytes * 8 != t->nelem * gr_dtype_bits(t->dtype)) __builtin_trap();
            if (gr_dtype_is_float(t->dtype) && t->nelem) {
                float f[4];
                uint64_t k = t->nelem < 4 ? t->nelem : 4;
                if (gr_tensor_read_f32(t, t->nelem - k, k, f)) __builtin_trap();
            }
            sum += t->nbytes;
        }
        if (8 + n + sum != size) __builtin_trap();
        for (size_t i = 0; i < gr_st_meta_count(st); i++)
            if (!gr_st_meta_get(st, gr_st_meta_key(st, i))) __builtin_trap();
        gr_st_close(&st);
    }
    /* the header check alone, on the raw bytes */
    gr_st_check_header("fuzz", (const char *)data, size, size % 64);
    return 0;
}
