/* fuzz_report: arbitrary stage ids, parameters and table specs into the
 * report builder. Input: a JSON table spec on the first line, then one stage
 * id per line. Bad ids and specs must be refused with a message; accepted
 * ones must render a table and a CSV without crashing. */
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_json.h"
#include "gr_report.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *end = s + size;
    const char *nl = memchr(s, '\n', size);
    if (!nl) return 0;
    gr_json *spec = gr_json_parse(s, (size_t)(nl - s), "spec");
    gr_report *r = gr_report_new();
    if (!r) abort();
    char id[GR_REPORT_MAX_NAME + 2];
    const char *metrics_text = "{\"acc\":0.5,\"loss\":2,\"n\":3}";
    gr_json *metrics = gr_json_parse(metrics_text, strlen(metrics_text), "m");
    const char *params_text = "{\"split\":\"test\",\"lambda\":0.5,\"model\":\"sha256:ab\"}";
    gr_json *params = gr_json_parse(params_text, strlen(params_text), "p");
    for (const char *p = nl + 1; p < end;) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e) e = end;
        size_t n = (size_t)(e - p);
        if (n < sizeof id && !memchr(p, 0, n)) {
            memcpy(id, p, n);
            id[n] = 0;
            if (gr_report_add(r, id, "evaluate", params, metrics) && !gr_errmsg()[0]) abort();
        }
        p = e + 1;
    }
    gr_buf b = {0};
    if (gr_report_csv(r, NULL, 0, &b)) abort();
    gr_buf_reset(&b);
    if (gr_report_md_all(r, NULL, 0, &b)) abort();
    gr_buf_reset(&b);
    if (spec && gr_report_count(r) && gr_report_md_table(r, spec, "fuzz", &b) && !gr_errmsg()[0])
        abort();
    gr_buf_free(&b);
    gr_json_free(spec);
    gr_json_free(metrics);
    gr_json_free(params);
    gr_report_destroy(&r);
    return 0;
}
