/* fuzz_manifest: arbitrary bytes into the tree-manifest parser. Whatever it
 * accepts must obey the path rules and re-encode to exactly the same bytes
 * (canonical form: one tree, one id). */
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_manifest.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gr_manifest *m = gr_manifest_parse((const char *)data, size, "fuzz");
    if (!m) {
        if (!gr_errmsg()[0]) abort(); /* every rejection has a message */
        return 0;
    }
    for (size_t i = 0; i < gr_manifest_count(m); i++) {
        const gr_manifest_entry *e = gr_manifest_entry_at(m, i);
        if (gr_manifest_check_path(e->path)) abort();
        if (gr_manifest_find(m, e->path) != e) abort();
    }
    gr_buf b = {0};
    if (gr_manifest_encode(m, &b)) abort();
    if (b.len != size || memcmp(b.data, data, size)) abort();
    gr_buf_free(&b);
    gr_manifest_destroy(&m);
    return 0;
}
