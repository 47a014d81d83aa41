/* gr_dtype: safetensors dtypes and bit-exact conversions between fp32 and
 * bf16 / fp16 / fp64 (matching PyTorch's round-to-nearest-even). */
#ifndef GR_DTYPE_H
#define GR_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GR_DT_BOOL,
    GR_DT_U8,
    GR_DT_I8,
    GR_DT_F8_E5M2,
    GR_DT_F8_E4M3,
    GR_DT_F8_E8M0,
    GR_DT_F6_E2M3,
    GR_DT_F6_E3M2,
    GR_DT_F4,
    GR_DT_I16,
    GR_DT_U16,
    GR_DT_F16,
    GR_DT_BF16,
    GR_DT_I32,
    GR_DT_U32,
    GR_DT_F32,
    GR_DT_I64,
    GR_DT_U64,
    GR_DT_F64,
    GR_DT_C64,
    GR_DT_COUNT
} gr_dtype;

/* Parses a safetensors dtype name ("BF16"); returns -1 if unknown. */
int gr_dtype_from_name(const char *name);
const char *gr_dtype_name(gr_dtype dt);
/* Size of one element in bits (4 for F4, 6 for F6_*, 8 for F8_*, ...). */
unsigned gr_dtype_bits(gr_dtype dt);
/* Whether graft computes on this dtype (F32, F16, BF16, F64). */
int gr_dtype_is_float(gr_dtype dt);

float gr_bf16_to_f32(uint16_t h);
uint16_t gr_f32_to_bf16(float f);
float gr_f16_to_f32(uint16_t h);
uint16_t gr_f32_to_f16(float f);

/* Converts n elements between dtype dt (F32, F16, BF16, F64) and fp32. The
 * source and destination must not overlap. Returns 0, or GR_EUNSUP for other
 * dtypes. */
int gr_to_f32(gr_dtype dt, const void *src, float *dst, size_t n);
int gr_from_f32(gr_dtype dt, const float *src, void *dst, size_t n);

#endif
