/* ref_io: exchanging float tensors with the numpy reference scripts in
 * tests/ref/ through raw little-endian files (f32, or bf16/f16 bit patterns),
 * shared by the kernel tests. Include after gr_dtype.h; defines PY if unset. */
#ifndef REF_IO_H
#define REF_IO_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gr_dtype.h"

#ifndef PY
#define PY "/usr/bin/python3"
#endif

/* Rounds x through a dtype (the C side sees exactly what the file holds). */
static inline void quantize(float *x, size_t n, const char *dt)
{
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(dt, "bf16"))
            x[i] = gr_bf16_to_f32(gr_f32_to_bf16(x[i]));
        else if (!strcmp(dt, "f16"))
            x[i] = gr_f16_to_f32(gr_f32_to_f16(x[i]));
    }
}

static inline void write_raw(const char *dir, const char *name, const float *x, size_t n,
                             const char *dt)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(dt, "f32"))
            fwrite(&x[i], 4, 1, f);
        else {
            uint16_t h = !strcmp(dt, "bf16") ? gr_f32_to_bf16(x[i]) : gr_f32_to_f16(x[i]);
            fwrite(&h, 2, 1, f);
        }
    }
    fclose(f);
}

static inline float *read_raw(const char *dir, const char *name, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    float *x = malloc((n ? n : 1) * sizeof *x);
    size_t got = f ? fread(x, 4, n, f) : 0;
    if (f) fclose(f);
    if (got != n) {
        free(x);
        return NULL;
    }
    return x;
}

static inline int have_numpy(void)
{
    return access(PY, X_OK) == 0 && system(PY " -c 'import numpy' 2>/dev/null") == 0;
}

#endif
