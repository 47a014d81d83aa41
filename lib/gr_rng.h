/* gr_rng: a counter-based random generator (Philox4x32-10). The value for
 * (key, counter) depends on nothing else, so results are identical for any
 * thread count, chunking or machine (DESIGN.md section 8). */
#ifndef GR_RNG_H
#define GR_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Derives a 64-bit key from a seed and a tag (e.g. tensor name) and an index
 * (e.g. model index): key = H(seed, tag, index). */
uint64_t gr_rng_key(uint64_t seed, const char *tag, uint64_t index);
/* Four independent 32-bit random words for (key, counter). */
void gr_rng_philox(uint64_t key, uint64_t counter, uint32_t out[4]);
/* Uniform in [0, 1) with 24 random bits, for element i: uses words of block
 * i/4 so four consecutive elements share one Philox call. */
float gr_rng_uniform(uint64_t key, uint64_t i);
/* Uniform doubles in [0, 1) with 53 bits, two per Philox block. */
double gr_rng_uniform_d(uint64_t key, uint64_t i);
/* Fills dst[0..n) with gr_rng_uniform(key, first + j). */
void gr_rng_fill_uniform(uint64_t key, uint64_t first, float *dst, size_t n);

/* A sequential stream on top of the counter generator, for simulations and
 * training loops that draw one number after another. */
typedef struct gr_rng_stream {
    uint64_t key, counter;
    uint32_t buf[4];
    int have;
} gr_rng_stream;

void gr_rng_stream_init(gr_rng_stream *s, uint64_t seed, const char *tag);
uint32_t gr_rng_next_u32(gr_rng_stream *s);
double gr_rng_next_double(gr_rng_stream *s); /* [0, 1) */
double gr_rng_next_normal(gr_rng_stream *s); /* standard normal (Box-Muller) */

#endif
