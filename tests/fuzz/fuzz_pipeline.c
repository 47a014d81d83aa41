/* fuzz_pipeline: arbitrary bytes as a pipeline file (YAML), optionally with
 * --set overrides after a line "#--set" (one per line). A rejection must carry
 * a one-line message naming the file; an accepted pipeline must be a DAG in
 * topological order with unique ids, parameters that pass the op's checks,
 * and a JSON form that parses. */
#include "gr_err.h"
#include "gr_jsonb.h"
#include "gr_pipeline.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SETS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    size_t ylen = size;
    const char *sets[MAX_SETS];
    size_t nsets = 0;
    char *mark = strstr(text, "\n#--set\n");
    if (mark) {
        ylen = (size_t)(mark - text) + 1;
        char *p = mark + 8;
        while (*p && nsets < MAX_SETS) {
            char *nl = strchr(p, '\n');
            if (nl) *nl = 0;
            sets[nsets++] = p;
            if (!nl) break;
            p = nl + 1;
        }
    }
    gr_pipeline *pl = gr_pipeline_parse(text, ylen, "fuzz.yaml", sets, nsets);
    if (!pl) {
        const char *m = gr_errmsg();
        if (!m[0] || strchr(m, '\n')) abort();
        if (gr_errcode() == GR_EINVAL && !strstr(m, "fuzz.yaml") && !strstr(m, "--set")) abort();
        free(text);
        return 0;
    }
    for (size_t i = 0; i < pl->nstages; i++) {
        const gr_stage *s = &pl->stages[i];
        const gr_op *op = gr_op_find(s->op);
        if (!op || gr_op_check_params(op, s->params)) abort();
        for (size_t d = 0; d < s->ndeps; d++) {
            const gr_stage *u = gr_pipeline_find(pl, s->deps[d]);
            if (!u || u >= s) abort(); /* every dependency comes earlier */
        }
        if (gr_pipeline_find(pl, s->id) != s) abort(); /* ids unique */
    }
    gr_buf b = {0};
    if (gr_pipeline_to_json(pl, &b)) abort();
    gr_json *j = gr_json_parse(b.data, b.len, "to_json");
    if (!j) abort();
    gr_json_free(j);
    gr_buf_free(&b);
    gr_pipeline_free(&pl);
    free(text);
    return 0;
}
