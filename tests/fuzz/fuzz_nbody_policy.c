/* fuzz_nbody_policy: hostile nbody policy artifacts. The input is config.json
 * text, a NUL byte, then a safetensors image. Whatever loads must be a
 * policy the nbody op can drive: 13 inputs, 1..64 actions in (0, 1), a
 * finite chunk, and a greedy action within range for a sample state. */
#include "gr_err.h"
#include "nbody/gr_nbrl.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul) return 0;
    size_t clen = (size_t)(nul - data);
    gr_nbrl_policy *p =
        gr_nbrl_policy_load_mem("fuzz", (const char *)data, clen, nul + 1, size - clen - 1);
    if (!p) {
        if (!gr_errmsg()[0]) abort(); /* a rejection always says why */
        return 0;
    }
    int n;
    const double *mu = gr_nbrl_policy_actions(p, &n);
    if (n < 1 || n > GR_NBRL_MAX_ACTIONS) abort();
    for (int i = 0; i < n; i++)
        if (!(mu[i] > 0 && mu[i] < 1)) abort();
    if (!(gr_nbrl_policy_chunk(p) > 0) || !isfinite(gr_nbrl_policy_chunk(p))) abort();
    gr_qnet_shape s = gr_qnet_get_shape(gr_nbrl_policy_net(p));
    if (s.inputs != GR_NBRL_NSTATE || s.outputs != n) abort();
    /* keep the forward pass cheap: skip huge (valid) networks */
    if ((double)s.hidden * s.hidden * (s.repeat + 1) < 1e7) {
        float state[GR_NBRL_NSTATE];
        for (int i = 0; i < GR_NBRL_NSTATE; i++) state[i] = (float)(i - 6) * 0.25f;
        int a = gr_nbrl_policy_act(p, state);
        if (a < 0 || a >= n) abort();
    }
    gr_nbrl_policy_destroy(&p);
    return 0;
}
