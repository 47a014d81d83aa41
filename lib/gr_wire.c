/* gr_wire: graft wire protocol — framing, a bounded msgpack decoder into
 * gr_json trees, per-command field tables, msgpack writers and JSON output. */
#include "gr_wire.h"
#include "gr_err.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* A body may describe at most this many values (maps, arrays, scalars):
 * bounds the memory a hostile 8 MiB body can make us allocate (~100 B each). */
#define WIRE_MAX_NODES (1u << 18)

/* ------------------------------------------------------------------ */
/* command and field tables                                            */

typedef enum {
    F_STR,  /* string */
    F_ID,   /* string of 1..GR_WIRE_MAX_ID printable non-space ASCII bytes */
    F_INT,  /* integer */
    F_UINT, /* integer >= 0 */
    F_NUM,  /* number */
    F_BOOL, /* boolean */
    F_MAP,  /* object */
    F_ARR,  /* array */
    F_STRS, /* array of strings */
    F_ANY,  /* any value */
} ftype;

typedef struct {
    const char *name;
    ftype type;
    int required;
} field;

typedef struct {
    gr_wire_dir dir;
    int cmd;
    const char *name;
    const field *fields; /* terminated by {NULL} */
} cmdspec;

static const field f_submit[] = {
    {"pipeline", F_STR, 1}, {"filename", F_STR, 0}, {"sets", F_STRS, 0}, {"no_cache", F_BOOL, 0},
    {"name", F_STR, 0},     {"priority", F_INT, 0}, {"req", F_INT, 0},   {NULL, 0, 0}};
static const field f_status[] = {{"job", F_ID, 0}, {"req", F_INT, 0}, {NULL, 0, 0}};
static const field f_job[] = {{"job", F_ID, 1}, {"req", F_INT, 0}, {NULL, 0, 0}};
static const field f_list[] = {
    {"state", F_STR, 0}, {"limit", F_UINT, 0}, {"req", F_INT, 0}, {NULL, 0, 0}};
static const field f_req[] = {{"req", F_INT, 0}, {NULL, 0, 0}};
static const field f_reply[] = {{"req", F_INT, 0}, {"result", F_ANY, 1}, {NULL, 0, 0}};
static const field f_error[] = {
    {"req", F_INT, 0}, {"error", F_STR, 1}, {"code", F_STR, 1}, {NULL, 0, 0}};
static const field f_event[] = {{"job", F_ID, 1},       {"seq", F_STR, 1},   {"type", F_STR, 1},
                                {"ts", F_UINT, 1},      {"stage", F_ID, 0},  {"state", F_STR, 0},
                                {"attempt", F_UINT, 0}, {"done", F_NUM, 0},  {"total", F_NUM, 0},
                                {"message", F_STR, 0},  {"error", F_STR, 0}, {"worker", F_ID, 0},
                                {"final", F_BOOL, 0},   {NULL, 0, 0}};
static const field f_ready[] = {{"worker", F_ID, 1},    {"host", F_STR, 1},     {"pid", F_UINT, 1},
                                {"ops", F_STRS, 1},     {"version", F_STR, 1},  {"task", F_ID, 0},
                                {"attempt", F_UINT, 0}, {"threads", F_UINT, 0}, {NULL, 0, 0}};
static const field f_hb_w[] = {
    {"task", F_ID, 0}, {"attempt", F_UINT, 0}, {"rss", F_UINT, 0}, {NULL, 0, 0}};
static const field f_hb_b[] = {{"interval_ms", F_UINT, 0}, {"liveness", F_UINT, 0}, {NULL, 0, 0}};
static const field f_progress[] = {{"task", F_ID, 1},   {"attempt", F_UINT, 1}, {"done", F_NUM, 1},
                                   {"total", F_NUM, 1}, {"message", F_STR, 0},  {NULL, 0, 0}};
static const field f_done[] = {{"task", F_ID, 1},         {"attempt", F_UINT, 1},
                               {"outputs", F_MAP, 1},     {"metrics", F_MAP, 0},
                               {"elapsed_ms", F_UINT, 0}, {NULL, 0, 0}};
static const field f_fail[] = {{"task", F_ID, 1},
                               {"attempt", F_UINT, 1},
                               {"error", F_STR, 1},
                               {"retryable", F_BOOL, 1},
                               {NULL, 0, 0}};
static const field f_task[] = {
    {"task", F_ID, 1},      {"job", F_ID, 1},        {"stage", F_ID, 1},    {"attempt", F_UINT, 1},
    {"op", F_ID, 1},        {"params", F_MAP, 1},    {"inputs", F_STRS, 1}, {"deadline", F_UINT, 1},
    {"timeout", F_UINT, 0}, {"ready_us", F_UINT, 0}, {NULL, 0, 0}};
static const field f_abort[] = {
    {"task", F_ID, 1}, {"attempt", F_UINT, 1}, {"reason", F_STR, 0}, {NULL, 0, 0}};
static const field f_disconnect[] = {{"reason", F_STR, 0}, {NULL, 0, 0}};

static const cmdspec specs[] = {
    {GR_WIRE_TO_BROKER, GR_CMD_SUBMIT, "SUBMIT", f_submit},
    {GR_WIRE_TO_BROKER, GR_CMD_STATUS, "STATUS", f_status},
    {GR_WIRE_TO_BROKER, GR_CMD_CANCEL, "CANCEL", f_job},
    {GR_WIRE_TO_BROKER, GR_CMD_WATCH, "WATCH", f_job},
    {GR_WIRE_TO_BROKER, GR_CMD_LIST, "LIST", f_list},
    {GR_WIRE_TO_BROKER, GR_CMD_WORKERS, "WORKERS", f_req},
    {GR_WIRE_TO_BROKER, GR_CMD_UNWATCH, "UNWATCH", f_job},
    {GR_WIRE_TO_CLIENT, GR_CMD_REPLY, "REPLY", f_reply},
    {GR_WIRE_TO_CLIENT, GR_CMD_ERROR, "ERROR", f_error},
    {GR_WIRE_TO_CLIENT, GR_CMD_EVENT, "EVENT", f_event},
    {GR_WIRE_TO_BROKER, GR_CMD_READY, "READY", f_ready},
    {GR_WIRE_TO_BROKER, GR_CMD_HEARTBEAT, "HEARTBEAT", f_hb_w},
    {GR_WIRE_TO_BROKER, GR_CMD_PROGRESS, "PROGRESS", f_progress},
    {GR_WIRE_TO_BROKER, GR_CMD_DONE, "DONE", f_done},
    {GR_WIRE_TO_BROKER, GR_CMD_FAIL, "FAIL", f_fail},
    {GR_WIRE_TO_WORKER, GR_CMD_TASK, "TASK", f_task},
    {GR_WIRE_TO_WORKER, GR_CMD_ABORT, "CANCEL", f_abort},
    {GR_WIRE_TO_WORKER, GR_CMD_HEARTBEAT, "HEARTBEAT", f_hb_b},
    {GR_WIRE_TO_WORKER, GR_CMD_DISCONNECT, "DISCONNECT", f_disconnect},
};
#define NSPECS (sizeof specs / sizeof specs[0])

static const cmdspec *find_spec(gr_wire_dir dir, int cmd)
{
    for (size_t i = 0; i < NSPECS; i++)
        if (specs[i].dir == dir && specs[i].cmd == cmd) return &specs[i];
    return NULL;
}

const char *gr_wire_cmd_name(int cmd)
{
    for (size_t i = 0; i < NSPECS; i++)
        if (specs[i].cmd == cmd) return specs[i].name;
    return NULL;
}

int gr_wire_cmd_valid(gr_wire_dir dir, int cmd)
{
    return find_spec(dir, cmd) != NULL;
}

static int id_ok(const gr_json *v)
{
    if (v->type != GR_JSON_STR || v->len == 0 || v->len > GR_WIRE_MAX_ID) return 0;
    for (size_t i = 0; i < v->len; i++) {
        unsigned char c = (unsigned char)v->str[i];
        if (c < 0x20 || c == 0x7f) return 0; /* UTF-8 was checked by the decoder */
    }
    return 1;
}

static const char *ftype_name(ftype t)
{
    static const char *n[] = {"a string",
                              "an id (1-512 bytes, no control characters)",
                              "an integer",
                              "a non-negative integer",
                              "a number",
                              "a boolean",
                              "a map",
                              "an array",
                              "an array of strings",
                              "any value"};
    return n[t];
}

static int field_ok(ftype t, const gr_json *v)
{
    switch (t) {
    case F_STR:
        return v->type == GR_JSON_STR;
    case F_ID:
        return id_ok(v);
    case F_INT:
        return v->type == GR_JSON_NUM && v->is_int;
    case F_UINT:
        return v->type == GR_JSON_NUM && v->is_int && v->i >= 0;
    case F_NUM:
        return v->type == GR_JSON_NUM;
    case F_BOOL:
        return v->type == GR_JSON_BOOL;
    case F_MAP:
        return v->type == GR_JSON_OBJ;
    case F_ARR:
        return v->type == GR_JSON_ARR;
    case F_STRS:
        if (v->type != GR_JSON_ARR) return 0;
        for (size_t i = 0; i < v->len; i++)
            if (v->items[i]->type != GR_JSON_STR) return 0;
        return 1;
    case F_ANY:
        return 1;
    }
    return 0;
}

int gr_wire_check(gr_wire_dir dir, int cmd, const gr_json *body)
{
    const cmdspec *s = find_spec(dir, cmd);
    if (!s) return gr_seterr(GR_EINVAL, "command 0x%02x is not valid in this direction", cmd);
    if (!body || body->type != GR_JSON_OBJ)
        return gr_seterr(GR_EINVAL, "%s: body is not a map", s->name);
    for (const field *f = s->fields; f->name; f++) {
        const gr_json *v = gr_json_get(body, f->name);
        if (!v) {
            if (f->required)
                return gr_seterr(GR_EINVAL, "%s: missing required field '%s'", s->name, f->name);
            continue;
        }
        if (!field_ok(f->type, v))
            return gr_seterr(GR_EINVAL, "%s: field '%s' must be %s", s->name, f->name,
                             ftype_name(f->type));
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* msgpack decoder                                                     */

typedef struct {
    const uint8_t *s, *p, *end;
    size_t nodes;
} unpacker;

static int ufail(unpacker *U, const char *rule)
{
    return gr_seterr(GR_EFORMAT, "msgpack body: offset %zu: %s", (size_t)(U->p - U->s), rule);
}

static int need(unpacker *U, size_t n)
{
    return (size_t)(U->end - U->p) >= n ? 0 : ufail(U, "truncated");
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Length of the valid UTF-8 sequence at p, or 0 (overlong, surrogate,
 * beyond U+10FFFF, truncated). */
static int utf8_seq(const uint8_t *p, const uint8_t *end)
{
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    int n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, cp = c & 0x07;
    else
        return 0;
    if (end - p < n) return 0;
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static int utf8_valid(const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    while (p < end) {
        int k = utf8_seq(p, end);
        if (!k) return 0;
        p += k;
    }
    return 1;
}

/* Reads a str header + bytes at U->p into a fresh NUL-terminated copy. */
static int read_str(unpacker *U, char **out, size_t *outlen)
{
    if (need(U, 1)) return GR_EFORMAT;
    uint8_t t = *U->p;
    size_t hdr, n;
    if (t >= 0xa0 && t <= 0xbf)
        hdr = 1, n = t & 0x1f;
    else if (t == 0xd9 || t == 0xda || t == 0xdb) {
        int w = t == 0xd9 ? 1 : t == 0xda ? 2 : 4;
        if (need(U, 1 + (size_t)w)) return GR_EFORMAT;
        hdr = 1 + (size_t)w;
        n = (size_t)be(U->p + 1, w);
    } else
        return ufail(U, "map key is not a string");
    if (need(U, hdr) || (size_t)(U->end - U->p) - hdr < n) return ufail(U, "string truncated");
    const uint8_t *d = U->p + hdr;
    if (!utf8_valid(d, n)) return ufail(U, "string is not valid UTF-8");
    char *s = malloc(n + 1);
    if (!s) return gr_seterr(GR_ENOMEM, "out of memory decoding msgpack");
    if (n) memcpy(s, d, n);
    s[n] = 0;
    U->p += hdr + n;
    *out = s;
    *outlen = n;
    return 0;
}

static int cmp_keys(const void *a, const void *b, void *ctx)
{
    const gr_json *j = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    size_t lx = j->keylens[x], ly = j->keylens[y];
    int c = memcmp(j->keys[x], j->keys[y], lx < ly ? lx : ly);
    if (c) return c;
    return lx < ly ? -1 : lx > ly;
}

static int keys_unique(const gr_json *j)
{
    if (j->len < 2) return 1;
    if (j->len <= 16) {
        for (size_t a = 0; a < j->len; a++)
            for (size_t b = a + 1; b < j->len; b++)
                if (j->keylens[a] == j->keylens[b] &&
                    !memcmp(j->keys[a], j->keys[b], j->keylens[a]))
                    return 0;
        return 1;
    }
    size_t *idx = malloc(j->len * sizeof *idx);
    if (!idx) return -1;
    for (size_t i = 0; i < j->len; i++) idx[i] = i;
    qsort_r(idx, j->len, sizeof *idx, cmp_keys, (void *)j);
    int ok = 1;
    for (size_t i = 1; i < j->len && ok; i++)
        if (cmp_keys(&idx[i - 1], &idx[i], (void *)j) == 0) ok = 0;
    free(idx);
    return ok;
}

static int unpack_value(unpacker *U, int depth, gr_json **out);

static int unpack_container(unpacker *U, int depth, int is_map, size_t n, gr_json *j)
{
    /* every element takes at least one byte (a map member two): a count is
     * never trusted beyond what the remaining input can hold */
    size_t left = (size_t)(U->end - U->p);
    if (n > (is_map ? left / 2 : left)) return ufail(U, "count exceeds the bytes left");
    if (n == 0) return 0;
    j->items = calloc(n, sizeof *j->items);
    if (!j->items) return gr_seterr(GR_ENOMEM, "out of memory decoding msgpack");
    if (is_map) {
        j->keys = calloc(n, sizeof *j->keys);
        j->keylens = calloc(n, sizeof *j->keylens);
        if (!j->keys || !j->keylens) return gr_seterr(GR_ENOMEM, "out of memory decoding msgpack");
    }
    for (size_t i = 0; i < n; i++) {
        int rc;
        if (is_map) {
            if ((rc = read_str(U, &j->keys[i], &j->keylens[i]))) return rc;
            /* a key containing NUL could not be looked up by name */
            if (memchr(j->keys[i], 0, j->keylens[i])) {
                free(j->keys[i]);
                j->keys[i] = NULL;
                return ufail(U, "map key contains a NUL byte");
            }
        }
        j->len = i + 1; /* so gr_json_free sees what exists so far */
        if ((rc = unpack_value(U, depth + 1, &j->items[i]))) return rc;
    }
    if (is_map) {
        int u = keys_unique(j);
        if (u < 0) return gr_seterr(GR_ENOMEM, "out of memory decoding msgpack");
        if (!u) return ufail(U, "duplicate key in map");
    }
    return 0;
}

static int unpack_value(unpacker *U, int depth, gr_json **out)
{
    *out = NULL;
    if (depth > GR_WIRE_MAX_DEPTH) return ufail(U, "nesting too deep");
    if (++U->nodes > WIRE_MAX_NODES) return ufail(U, "too many values");
    if (need(U, 1)) return GR_EFORMAT;
    gr_json *j = calloc(1, sizeof *j);
    if (!j) return gr_seterr(GR_ENOMEM, "out of memory decoding msgpack");
    *out = j;
    uint8_t t = *U->p;
    if (t <= 0x7f || t >= 0xe0) { /* fixint */
        j->type = GR_JSON_NUM;
        j->is_int = 1;
        j->i = t <= 0x7f ? t : (int64_t)(int8_t)t;
        j->num = (double)j->i;
        U->p++;
        return 0;
    }
    if ((t >= 0xa0 && t <= 0xbf) || t == 0xd9 || t == 0xda || t == 0xdb) {
        j->type = GR_JSON_STR;
        return read_str(U, &j->str, &j->len);
    }
    if ((t >= 0x80 && t <= 0x9f) || (t >= 0xdc && t <= 0xdf)) {
        int is_map = (t >= 0x80 && t <= 0x8f) || t == 0xde || t == 0xdf;
        size_t n;
        if (t <= 0x9f) {
            n = t & 0x0f;
            U->p++;
        } else {
            int w = (t == 0xdc || t == 0xde) ? 2 : 4;
            if (need(U, 1 + (size_t)w)) return GR_EFORMAT;
            n = (size_t)be(U->p + 1, w);
            U->p += 1 + w;
        }
        j->type = is_map ? GR_JSON_OBJ : GR_JSON_ARR;
        return unpack_container(U, depth, is_map, n, j);
    }
    switch (t) {
    case 0xc0:
        j->type = GR_JSON_NULL;
        U->p++;
        return 0;
    case 0xc2:
    case 0xc3:
        j->type = GR_JSON_BOOL;
        j->boolean = t == 0xc3;
        U->p++;
        return 0;
    case 0xca:
    case 0xcb: {
        int w = t == 0xca ? 4 : 8;
        if (need(U, 1 + (size_t)w)) return GR_EFORMAT;
        uint64_t bits = be(U->p + 1, w);
        j->type = GR_JSON_NUM;
        if (w == 4) {
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, 4);
            j->num = f;
        } else
            memcpy(&j->num, &bits, 8);
        U->p += 1 + w;
        return 0;
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf: {
        int w = 1 << (t - 0xcc);
        if (need(U, 1 + (size_t)w)) return GR_EFORMAT;
        uint64_t v = be(U->p + 1, w);
        if (v > (uint64_t)INT64_MAX) return ufail(U, "integer does not fit int64");
        j->type = GR_JSON_NUM;
        j->is_int = 1;
        j->i = (int64_t)v;
        j->num = (double)j->i;
        U->p += 1 + w;
        return 0;
    }
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        int w = 1 << (t - 0xd0);
        if (need(U, 1 + (size_t)w)) return GR_EFORMAT;
        uint64_t v = be(U->p + 1, w);
        int64_t s;
        if (w == 8)
            memcpy(&s, &v, 8);
        else {
            uint64_t sign = 1ull << (8 * w - 1);
            s = (int64_t)(v ^ sign) - (int64_t)sign; /* sign-extend */
        }
        j->type = GR_JSON_NUM;
        j->is_int = 1;
        j->i = s;
        j->num = (double)s;
        U->p += 1 + w;
        return 0;
    }
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return ufail(U, "bin values are not accepted");
    case 0xc7:
    case 0xc8:
    case 0xc9:
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return ufail(U, "ext values are not accepted");
    default:
        return ufail(U, "reserved type byte 0xc1");
    }
}

int gr_wire_unpack(const void *p, size_t n, gr_json **out)
{
    *out = NULL;
    unpacker U = {.s = p, .p = p, .end = (const uint8_t *)p + n};
    if (n == 0) return ufail(&U, "empty body");
    gr_json *j = NULL;
    int rc = unpack_value(&U, 0, &j);
    if (!rc && U.p != U.end) rc = ufail(&U, "trailing bytes after the value");
    if (rc) {
        gr_json_free(j);
        return rc;
    }
    *out = j;
    return 0;
}

/* ------------------------------------------------------------------ */
/* frames                                                              */

void gr_wire_msg_clear(gr_wire_msg *m)
{
    if (!m) return;
    gr_json_free(m->body);
    memset(m, 0, sizeof *m);
}

static int drop(uint64_t *counter, gr_wire_stats *st)
{
    if (st) {
        (*counter)++;
        st->dropped++;
    }
    return gr_errcode() ? gr_errcode() : GR_EINVAL;
}

int gr_wire_decode(gr_wire_dir dir, const void *const *frames, const size_t *lens, size_t nframes,
                   gr_wire_msg *out, gr_wire_stats *st)
{
    gr_wire_stats dummy;
    if (!st) st = &dummy;
    gr_json_free(out->body);
    out->body = NULL;
    out->cmd = -1;
    if (nframes != 3) {
        gr_seterr(GR_EINVAL, "message has %zu frames, expected 3 (tag, command, body)", nframes);
        return drop(&st->bad_frames, st);
    }
    if (lens[0] != GR_WIRE_TAG_LEN || memcmp(frames[0], GR_WIRE_TAG, GR_WIRE_TAG_LEN)) {
        gr_seterr(GR_EINVAL, "frame 0 is not the protocol tag %s", GR_WIRE_TAG);
        return drop(&st->bad_tag, st);
    }
    if (lens[1] != 1) {
        gr_seterr(GR_EINVAL, "frame 1 has %zu bytes, expected one command byte", lens[1]);
        return drop(&st->bad_cmd, st);
    }
    int cmd = *(const uint8_t *)frames[1];
    const cmdspec *s = find_spec(dir, cmd);
    if (!s) {
        gr_seterr(GR_EINVAL, "unknown command byte 0x%02x", cmd);
        return drop(&st->bad_cmd, st);
    }
    if (lens[2] > GR_WIRE_MAX_BODY) {
        gr_seterr(GR_EINVAL, "%s: body of %zu bytes exceeds the cap of %u", s->name, lens[2],
                  GR_WIRE_MAX_BODY);
        return drop(&st->oversize, st);
    }
    gr_json *body = NULL;
    if (gr_wire_unpack(frames[2], lens[2], &body)) {
        gr_adderr(GR_EFORMAT, "%s", s->name);
        return drop(&st->bad_body, st);
    }
    if (body->type != GR_JSON_OBJ) {
        gr_seterr(GR_EFORMAT, "%s: body is a msgpack %s, expected a map", s->name,
                  gr_json_type_name(body->type));
        gr_json_free(body);
        return drop(&st->bad_body, st);
    }
    if (gr_wire_check(dir, cmd, body)) {
        gr_json_free(body);
        return drop(&st->bad_fields, st);
    }
    out->cmd = cmd;
    out->body = body;
    st->received++;
    return 0;
}

#define RECV_FRAMES 4 /* routing id + tag + command + body */

int gr_wire_recv(void *sock, gr_wire_dir dir, int router, int flags, gr_wire_msg *out,
                 gr_wire_stats *st)
{
    zmq_msg_t parts[RECV_FRAMES];
    size_t nparts = 0, total = 0;
    int rc = 0;
    gr_json_free(out->body);
    out->body = NULL;
    out->cmd = -1;
    out->peer_len = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int zflags = (total == 0 && (flags & GR_WIRE_NOWAIT)) ? ZMQ_DONTWAIT : 0;
        if (zmq_msg_recv(&m, sock, zflags) < 0) {
            int e = zmq_errno();
            zmq_msg_close(&m);
            if (total == 0 && (e == EAGAIN || e == EINTR)) return 1;
            if (e == EINTR) continue; /* mid-message: the rest is already queued */
            rc = gr_seterr(GR_EIO, "zmq receive: %s", zmq_strerror(e));
            goto done;
        }
        total++;
        int more = zmq_msg_more(&m);
        if (nparts < RECV_FRAMES)
            parts[nparts++] = m;
        else
            zmq_msg_close(&m);
        if (!more) break;
    }
    size_t first = 0;
    if (router) {
        size_t plen = zmq_msg_size(&parts[0]);
        if (plen > GR_WIRE_MAX_PEER) plen = GR_WIRE_MAX_PEER;
        memcpy(out->peer, zmq_msg_data(&parts[0]), plen);
        out->peer_len = plen;
        first = 1;
    }
    if (total - first != 3 || nparts < first) {
        gr_seterr(GR_EINVAL, "message has %zu frames, expected 3 (tag, command, body)",
                  total - first);
        rc = drop(st ? &st->bad_frames : NULL, st);
        goto done;
    }
    {
        const void *fr[3];
        size_t ln[3];
        for (int i = 0; i < 3; i++) {
            fr[i] = zmq_msg_data(&parts[first + i]);
            ln[i] = zmq_msg_size(&parts[first + i]);
        }
        rc = gr_wire_decode(dir, fr, ln, 3, out, st);
    }
done:
    for (size_t i = 0; i < nparts; i++) zmq_msg_close(&parts[i]);
    return rc;
}

/* ------------------------------------------------------------------ */
/* msgpack writers                                                     */

static void put_be(gr_buf *b, uint8_t tag, uint64_t v, int w)
{
    uint8_t tmp[9];
    tmp[0] = tag;
    for (int i = 0; i < w; i++) tmp[1 + i] = (uint8_t)(v >> (8 * (w - 1 - i)));
    gr_buf_append(b, tmp, 1 + (size_t)w);
}

void gr_wire_pk_map(gr_buf *b, uint32_t n)
{
    if (n <= 15)
        gr_buf_putc(b, (char)(0x80 | n));
    else if (n <= 0xffff)
        put_be(b, 0xde, n, 2);
    else
        put_be(b, 0xdf, n, 4);
}

void gr_wire_pk_arr(gr_buf *b, uint32_t n)
{
    if (n <= 15)
        gr_buf_putc(b, (char)(0x90 | n));
    else if (n <= 0xffff)
        put_be(b, 0xdc, n, 2);
    else
        put_be(b, 0xdd, n, 4);
}

void gr_wire_pk_nil(gr_buf *b)
{
    gr_buf_putc(b, (char)0xc0);
}

void gr_wire_pk_bool(gr_buf *b, int v)
{
    gr_buf_putc(b, (char)(v ? 0xc3 : 0xc2));
}

void gr_wire_pk_int(gr_buf *b, int64_t v)
{
    if (v >= 0) {
        if (v <= 0x7f)
            gr_buf_putc(b, (char)v);
        else if (v <= 0xff)
            put_be(b, 0xcc, (uint64_t)v, 1);
        else if (v <= 0xffff)
            put_be(b, 0xcd, (uint64_t)v, 2);
        else if (v <= 0xffffffffll)
            put_be(b, 0xce, (uint64_t)v, 4);
        else
            put_be(b, 0xcf, (uint64_t)v, 8);
    } else {
        if (v >= -32)
            gr_buf_putc(b, (char)(int8_t)v);
        else if (v >= INT8_MIN)
            put_be(b, 0xd0, (uint64_t)v & 0xff, 1);
        else if (v >= INT16_MIN)
            put_be(b, 0xd1, (uint64_t)v & 0xffff, 2);
        else if (v >= INT32_MIN)
            put_be(b, 0xd2, (uint64_t)v & 0xffffffffu, 4);
        else
            put_be(b, 0xd3, (uint64_t)v, 8);
    }
}

void gr_wire_pk_double(gr_buf *b, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    put_be(b, 0xcb, bits, 8);
}

void gr_wire_pk_strn(gr_buf *b, const char *s, size_t n)
{
    if (n > 0xffffffffu) { /* cannot be framed; poison the buffer */
        b->oom = 1;
        return;
    }
    if (n <= 31)
        gr_buf_putc(b, (char)(0xa0 | n));
    else if (n <= 0xff)
        put_be(b, 0xd9, n, 1);
    else if (n <= 0xffff)
        put_be(b, 0xda, n, 2);
    else
        put_be(b, 0xdb, n, 4);
    gr_buf_append(b, s, n);
}

void gr_wire_pk_str(gr_buf *b, const char *s)
{
    gr_wire_pk_strn(b, s, strlen(s));
}

void gr_wire_pk_json(gr_buf *b, const gr_json *j)
{
    switch (j->type) {
    case GR_JSON_NULL:
        gr_wire_pk_nil(b);
        break;
    case GR_JSON_BOOL:
        gr_wire_pk_bool(b, j->boolean);
        break;
    case GR_JSON_NUM:
        if (j->is_int)
            gr_wire_pk_int(b, j->i);
        else
            gr_wire_pk_double(b, j->num);
        break;
    case GR_JSON_STR:
        gr_wire_pk_strn(b, j->str, j->len);
        break;
    case GR_JSON_ARR:
        gr_wire_pk_arr(b, (uint32_t)j->len);
        for (size_t i = 0; i < j->len; i++) gr_wire_pk_json(b, j->items[i]);
        break;
    case GR_JSON_OBJ:
        gr_wire_pk_map(b, (uint32_t)j->len);
        for (size_t i = 0; i < j->len; i++) {
            gr_wire_pk_strn(b, j->keys[i], j->keylens[i]);
            gr_wire_pk_json(b, j->items[i]);
        }
        break;
    }
}

int gr_wire_pk_json_text(gr_buf *b, const char *json, size_t len)
{
    gr_json *j = gr_json_parse(json, len, "JSON to pack");
    if (!j) return gr_errcode();
    gr_wire_pk_json(b, j);
    gr_json_free(j);
    return b->oom ? gr_seterr(GR_ENOMEM, "out of memory packing msgpack") : 0;
}

void gr_wire_pk_kv_str(gr_buf *b, const char *key, const char *val)
{
    gr_wire_pk_str(b, key);
    gr_wire_pk_str(b, val);
}

void gr_wire_pk_kv_int(gr_buf *b, const char *key, int64_t val)
{
    gr_wire_pk_str(b, key);
    gr_wire_pk_int(b, val);
}

void gr_wire_pk_kv_double(gr_buf *b, const char *key, double val)
{
    gr_wire_pk_str(b, key);
    gr_wire_pk_double(b, val);
}

void gr_wire_pk_kv_bool(gr_buf *b, const char *key, int val)
{
    gr_wire_pk_str(b, key);
    gr_wire_pk_bool(b, val);
}

/* ------------------------------------------------------------------ */
/* sending                                                             */

static int send_err(int e, gr_wire_stats *st)
{
    if (st) st->send_failed++;
    if (e == EHOSTUNREACH) return gr_seterr(GR_ENOTFOUND, "zmq send: peer is gone");
    if (e == EAGAIN) return gr_seterr(GR_ENET, "zmq send: queue full");
    return gr_seterr(GR_EIO, "zmq send: %s", zmq_strerror(e));
}

int gr_wire_send(void *sock, const void *peer, size_t peer_len, int cmd, const void *body,
                 size_t len, gr_wire_stats *st)
{
    static const uint8_t empty_map = 0x80;
    if (!len) {
        body = &empty_map;
        len = 1;
    }
    if (len > GR_WIRE_MAX_BODY)
        return gr_seterr(GR_EINVAL, "%s: body of %zu bytes exceeds the cap of %u",
                         gr_wire_cmd_name(cmd) ? gr_wire_cmd_name(cmd) : "?", len,
                         GR_WIRE_MAX_BODY);
    uint8_t c = (uint8_t)cmd;
    if (peer_len && zmq_send(sock, peer, peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return send_err(zmq_errno(), st);
    /* once the first part is accepted the rest of the message is too */
    if (zmq_send(sock, GR_WIRE_TAG, GR_WIRE_TAG_LEN, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(sock, &c, 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(sock, body, len, ZMQ_DONTWAIT) < 0)
        return send_err(zmq_errno(), st);
    if (st) st->sent++;
    return 0;
}

int gr_wire_send_json(void *sock, const void *peer, size_t peer_len, int cmd, const gr_json *body,
                      gr_wire_stats *st)
{
    gr_buf b = {0};
    gr_wire_pk_json(&b, body);
    int rc = b.oom ? gr_seterr(GR_ENOMEM, "out of memory packing msgpack")
                   : gr_wire_send(sock, peer, peer_len, cmd, b.data, b.len, st);
    gr_buf_free(&b);
    return rc;
}

/* ------------------------------------------------------------------ */
/* JSON output and copies                                              */

static int json_write(gr_buf *b, const gr_json *j, int sort_keys)
{
    switch (j->type) {
    case GR_JSON_NULL:
        gr_buf_puts(b, "null");
        break;
    case GR_JSON_BOOL:
        gr_buf_puts(b, j->boolean ? "true" : "false");
        break;
    case GR_JSON_NUM:
        if (j->is_int)
            gr_buf_printf(b, "%lld", (long long)j->i);
        else
            gr_buf_json_num(b, j->num);
        break;
    case GR_JSON_STR:
        gr_buf_json_str(b, j->str, j->len);
        break;
    case GR_JSON_ARR:
        gr_buf_putc(b, '[');
        for (size_t i = 0; i < j->len; i++) {
            if (i) gr_buf_putc(b, ',');
            json_write(b, j->items[i], sort_keys);
        }
        gr_buf_putc(b, ']');
        break;
    case GR_JSON_OBJ: {
        size_t *idx = NULL;
        if (sort_keys && j->len > 1) {
            idx = malloc(j->len * sizeof *idx);
            if (!idx) {
                b->oom = 1;
                return GR_ENOMEM;
            }
            for (size_t i = 0; i < j->len; i++) idx[i] = i;
            qsort_r(idx, j->len, sizeof *idx, cmp_keys, (void *)j);
        }
        gr_buf_putc(b, '{');
        for (size_t k = 0; k < j->len; k++) {
            size_t i = idx ? idx[k] : k;
            if (k) gr_buf_putc(b, ',');
            gr_buf_json_str(b, j->keys[i], j->keylens[i]);
            gr_buf_putc(b, ':');
            json_write(b, j->items[i], sort_keys);
        }
        gr_buf_putc(b, '}');
        free(idx);
        break;
    }
    }
    return b->oom ? GR_ENOMEM : 0;
}

int gr_wire_json_write(gr_buf *b, const gr_json *j, int sort_keys)
{
    if (json_write(b, j, sort_keys)) return gr_seterr(GR_ENOMEM, "out of memory writing JSON");
    return 0;
}

gr_json *gr_wire_json_dup(const gr_json *j)
{
    gr_json *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    *c = (gr_json){.type = j->type,
                   .line = j->line,
                   .boolean = j->boolean,
                   .num = j->num,
                   .is_int = j->is_int,
                   .i = j->i};
    if (j->type == GR_JSON_STR) {
        if (!(c->str = malloc(j->len + 1))) goto oom;
        memcpy(c->str, j->str, j->len);
        c->str[j->len] = 0;
        c->len = j->len;
        return c;
    }
    if ((j->type != GR_JSON_ARR && j->type != GR_JSON_OBJ) || !j->len) return c;
    if (!(c->items = calloc(j->len, sizeof *c->items))) goto oom;
    if (j->type == GR_JSON_OBJ) {
        c->keys = calloc(j->len, sizeof *c->keys);
        c->keylens = calloc(j->len, sizeof *c->keylens);
        if (!c->keys || !c->keylens) goto oom;
    }
    for (size_t i = 0; i < j->len; i++) {
        c->len = i + 1;
        if (j->type == GR_JSON_OBJ) {
            if (!(c->keys[i] = malloc(j->keylens[i] + 1))) goto oom;
            memcpy(c->keys[i], j->keys[i], j->keylens[i] + 1);
            c->keylens[i] = j->keylens[i];
        }
        if (!(c->items[i] = gr_wire_json_dup(j->items[i]))) goto oom;
    }
    return c;
oom:
    gr_json_free(c);
    gr_seterr(GR_ENOMEM, "out of memory copying JSON");
    return NULL;
}

/* ------------------------------------------------------------------ */
/* sockets                                                             */

void *gr_wire_dealer(void *zctx, const char *endpoint)
{
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    if (!s) {
        gr_seterr(GR_EIO, "zmq DEALER socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    /* a result sent just before the socket is closed still goes out */
    int linger = GR_WIRE_LINGER_MS, ivl = 100, ivl_max = 2000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    if (zmq_connect(s, endpoint) < 0) {
        gr_seterr(GR_EINVAL, "%s: cannot connect: %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

void *gr_wire_router(void *zctx, const char *endpoint)
{
    void *s = zmq_socket(zctx, ZMQ_ROUTER);
    if (!s) {
        gr_seterr(GR_EIO, "zmq ROUTER socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    /* linger > 0 also keeps what a peer sent just before it disconnected:
     * with 0, libzmq discards a closed connection's unread messages */
    int one = 1, linger = GR_WIRE_LINGER_MS, hwm = 100000;
    zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_bind(s, endpoint) < 0) {
        gr_seterr(GR_EINVAL, "%s: cannot bind: %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}
