/* fuzz_mergekit: arbitrary bytes as a mergekit YAML config. Accepted configs
 * must give merge-op parameters the op's own checks accept. */
#include "gr_err.h"
#include "gr_mergekit.h"
#include "gr_op.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gr_json *p = gr_mergekit_parse((const char *)data, size, "fuzz.yml");
    if (!p) {
        if (!gr_errmsg()[0]) abort();           /* every rejection says why */
        if (strchr(gr_errmsg(), '\n')) abort(); /* in one line */
        return 0;
    }
    const gr_op *op = gr_op_find("merge");
    if (op && gr_op_check_params(op, p)) abort();
    if (!gr_json_get_str(p, "method", NULL)) abort();
    const gr_json *m = gr_json_get(p, "models"), *pm = gr_json_get(p, "per_model");
    if (!m || !pm || m->type != GR_JSON_ARR || !m->len || pm->len != m->len) abort();
    gr_json_free(p);
    return 0;
}
