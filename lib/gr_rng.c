/* gr_rng: Philox4x32-10 (Salmon et al., SC'11) keyed by a hash of (seed, tag,
 * index). */
#include "gr_rng.h"

#include <math.h>
#include <string.h>

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t gr_rng_key(uint64_t seed, const char *tag, uint64_t index)
{
    /* FNV-1a over the tag, then mixed with seed and index. */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)(tag ? tag : ""); *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    return mix64(mix64(seed + 0x9e3779b97f4a7c15ULL) ^ mix64(h) ^ mix64(index * 0xd1b54a32d192ed03ULL + 1));
}

void gr_rng_philox(uint64_t key, uint64_t counter, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

float gr_rng_uniform(uint64_t key, uint64_t i)
{
    uint32_t w[4];
    gr_rng_philox(key, i >> 2, w);
    return (float)(w[i & 3] >> 8) * (1.0f / 16777216.0f);
}

double gr_rng_uniform_d(uint64_t key, uint64_t i)
{
    uint32_t w[4];
    gr_rng_philox(key, (i >> 1) | (1ULL << 63), w);
    int h = (int)(i & 1) * 2;
    uint64_t bits = ((uint64_t)w[h] << 21) ^ (w[h + 1] >> 11);
    return (double)(bits & ((1ULL << 53) - 1)) * (1.0 / 9007199254740992.0);
}

void gr_rng_fill_uniform(uint64_t key, uint64_t first, float *dst, size_t n)
{
    size_t j = 0;
    uint32_t w[4];
    while (j < n) {
        uint64_t i = first + j;
        gr_rng_philox(key, i >> 2, w);
        for (unsigned k = (unsigned)(i & 3); k < 4 && j < n; k++, j++)
            dst[j] = (float)(w[k] >> 8) * (1.0f / 16777216.0f);
    }
}

void gr_rng_stream_init(gr_rng_stream *s, uint64_t seed, const char *tag)
{
    memset(s, 0, sizeof *s);
    s->key = gr_rng_key(seed, tag, 0);
}

uint32_t gr_rng_next_u32(gr_rng_stream *s)
{
    if (s->have == 0) {
        gr_rng_philox(s->key, s->counter++, s->buf);
        s->have = 4;
    }
    return s->buf[4 - s->have--];
}

double gr_rng_next_double(gr_rng_stream *s)
{
    uint64_t a = gr_rng_next_u32(s) >> 5, b = gr_rng_next_u32(s) >> 6;
    return (double)(a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

double gr_rng_next_normal(gr_rng_stream *s)
{
    double u1 = gr_rng_next_double(s), u2 = gr_rng_next_double(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
