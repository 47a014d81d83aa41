/* fuzz_wire: arbitrary frames into the wire decoder. Input layout: byte 0
 * picks the receiving side (mod 3); the rest is split into frames at each
 * "\xfe\xfe\xfe" separator. Also checks that any body the decoder accepts
 * re-encodes to a body that decodes to the same tree. */
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_json.h"
#include "gr_log.h"
#include "gr_wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FRAMES 8

static void roundtrip(const uint8_t *p, size_t n)
{
    gr_json *a = NULL, *b = NULL;
    if (gr_wire_unpack(p, n, &a)) return;
    gr_buf enc = {0}, ja = {0}, jb = {0};
    gr_wire_pk_json(&enc, a);
    if (enc.oom) abort();
    if (gr_wire_unpack(enc.data, enc.len, &b)) abort(); /* our own output must decode */
    gr_wire_json_write(&ja, a, 1);
    gr_wire_json_write(&jb, b, 1);
    if (ja.len != jb.len || memcmp(ja.data, jb.data, ja.len)) abort();
    gr_json *c = gr_wire_json_dup(a);
    if (!c) abort();
    gr_json_free(c);
    gr_buf_free(&enc);
    gr_buf_free(&ja);
    gr_buf_free(&jb);
    gr_json_free(a);
    gr_json_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        gr_log_set_level(GR_LOG_OFF);
        quiet = 1;
    }
    if (size < 1) return 0;
    gr_wire_dir dir = (gr_wire_dir)(data[0] % 3);
    const void *fr[MAX_FRAMES];
    size_t ln[MAX_FRAMES], nf = 0;
    const uint8_t *p = data + 1, *end = data + size;
    while (nf < MAX_FRAMES) {
        const uint8_t *sep = NULL;
        for (const uint8_t *q = p; q + 3 <= end; q++)
            if (q[0] == 0xfe && q[1] == 0xfe && q[2] == 0xfe) {
                sep = q;
                break;
            }
        fr[nf] = p;
        ln[nf] = (size_t)((sep ? sep : end) - p);
        nf++;
        if (!sep) break;
        p = sep + 3;
    }
    gr_wire_stats st = {0};
    gr_wire_msg m = {0};
    int rc = gr_wire_decode(dir, fr, ln, nf, &m, &st);
    if (rc == 0) {
        if (!m.body || m.body->type != GR_JSON_OBJ) abort();
        if (gr_wire_check(dir, m.cmd, m.body)) abort();
        if (st.received != 1 || st.dropped != 0) abort();
    } else if (st.dropped != 1 || m.body)
        abort();
    gr_wire_msg_clear(&m);
    if (nf >= 3) roundtrip(fr[2], ln[2]);
    roundtrip(data + 1, size - 1);
    return 0;
}
