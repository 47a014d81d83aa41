/* fuzz_model_config: hostile config.json files for the evaluate op. The input
 * is parsed as JSON and read as a model config; an accepted config must be
 * self-consistent, and its rotary frequencies must be finite and positive. */
#include "gr_json.h"
#include "gr_model.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gr_json *j = gr_json_parse((const char *)data, size, "config.json");
    if (!j) return 0;
    gr_model_cfg c;
    if (!gr_model_cfg_parse(j, "config.json", &c)) {
        if (c.vocab < 1 || c.hidden < 1 || c.layers < 1 || c.heads < 1 || c.kv_heads < 1 ||
            c.heads % c.kv_heads || c.head_dim < 1 || c.max_pos < 1 || c.inter < 1)
            abort();
        if (c.family == GR_FAMILY_LLAMA) {
            if (c.head_dim % 2 || c.rope == GR_ROPE_NONE) abort();
            float *inv = malloc(sizeof(float) * (size_t)(c.head_dim / 2));
            if (!inv) abort();
            gr_model_rope_inv_freq(&c, inv);
            for (int i = 0; i < c.head_dim / 2; i++)
                if (!(inv[i] >= 0) || isinf(inv[i])) abort();
            free(inv);
        } else if (c.hidden != c.heads * c.head_dim) {
            abort();
        }
    }
    gr_json_free(j);
    return 0;
}
