/* gr_wire: the graft wire protocol — ZeroMQ multipart framing, command bytes,
 * msgpack bodies decoded into gr_json trees and validated per command.
 * schemas/protocol.md is the reference for every command and field. */
#ifndef GR_WIRE_H
#define GR_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "gr_buf.h"
#include "gr_json.h"

/* ---- framing ----
 * Every message is three ZeroMQ frames (after the routing id that a ROUTER
 * socket adds or strips):
 *   frame 0  the protocol tag, exactly the 7 bytes "GRAFT/1"
 *   frame 1  one command byte (gr_cmd)
 *   frame 2  one msgpack map: the body (may be the empty map 0x80)
 * Anything else (another frame count, tag, command, or a body that is not a
 * well-formed map within the caps below) is dropped and counted. */
#define GR_WIRE_TAG       "GRAFT/1"
#define GR_WIRE_TAG_LEN   7
#define GR_WIRE_MAX_BODY  (8u << 20) /* bytes in frame 2 */
#define GR_WIRE_MAX_DEPTH 32         /* nesting of maps/arrays in a body */
#define GR_WIRE_MAX_ID    512        /* bytes in an id field (job, stage, task, worker) */
#define GR_WIRE_MAX_PEER  255        /* bytes in a ZeroMQ routing id */

/* Command bytes. Client = `graft` CLI or any dashboard/tool (DEALER);
 * worker = graft-worker (DEALER); broker = graft-broker (one ROUTER). */
typedef enum {
    /* client -> broker */
    GR_CMD_SUBMIT = 0x01,  /* {pipeline, filename?, sets?, no_cache?, name?, priority?, req?} */
    GR_CMD_STATUS = 0x02,  /* {job?, req?}: one job's status, or the job list */
    GR_CMD_CANCEL = 0x03,  /* {job, req?} */
    GR_CMD_WATCH = 0x04,   /* {job, req?}: REPLY, then EVENTs until the job ends */
    GR_CMD_LIST = 0x05,    /* {state?, limit?, req?} */
    GR_CMD_WORKERS = 0x06, /* {req?} */
    GR_CMD_UNWATCH = 0x07, /* {job, req?} */
    /* broker -> client */
    GR_CMD_REPLY = 0x10, /* {req?, result} */
    GR_CMD_ERROR = 0x11, /* {req?, error, code} */
    GR_CMD_EVENT = 0x12, /* {job, seq, type, ts, stage?, state?, attempt?, ..., final?} */
    /* worker -> broker (HEARTBEAT also broker -> worker) */
    GR_CMD_READY = 0x20,     /* {worker, host, pid, ops, version, task?, attempt?, threads?} */
    GR_CMD_HEARTBEAT = 0x21, /* w->b {task?, attempt?, rss?}; b->w {interval_ms?, liveness?} */
    GR_CMD_PROGRESS = 0x22,  /* {task, attempt, done, total, message?} */
    GR_CMD_DONE = 0x23,      /* {task, attempt, outputs, metrics?, elapsed_ms?} */
    GR_CMD_FAIL = 0x24,      /* {task, attempt, error, retryable} */
    /* broker -> worker */
    GR_CMD_TASK = 0x30,  /* {task, job, stage, attempt, op, params, inputs, deadline, timeout?} */
    GR_CMD_ABORT = 0x31, /* "CANCEL" to a worker: {task, attempt, reason?} */
    GR_CMD_DISCONNECT = 0x32, /* {reason?}: re-register with READY */
} gr_cmd;

/* Who receives a message; selects the field table a body is checked against
 * (HEARTBEAT differs by direction). */
typedef enum {
    GR_WIRE_TO_BROKER = 0, /* from clients and workers */
    GR_WIRE_TO_WORKER = 1,
    GR_WIRE_TO_CLIENT = 2,
} gr_wire_dir;

/* A task id is "<job>:<stage>": job ids never contain ':', so the first ':'
 * splits it. Ids are 1..GR_WIRE_MAX_ID bytes of UTF-8 without control
 * characters (matrix variant ids such as `p[density=0.5]` may hold any
 * printable text). */

/* Name of a command ("SUBMIT", ... ; the worker-side abort is "CANCEL"), or
 * NULL for an unknown byte. */
const char *gr_wire_cmd_name(int cmd);
/* Whether cmd is a command that dir may receive. */
int gr_wire_cmd_valid(gr_wire_dir dir, int cmd);

/* ---- decoding (every byte hostile) ---- */

/* Decodes one msgpack value spanning exactly p[0..n) into a gr_json tree:
 * map (string keys only, no duplicates) -> object, array, str (valid UTF-8),
 * int (must fit int64), float32/64, bool, nil. bin, ext, non-string keys,
 * trailing bytes, truncation, nesting deeper than GR_WIRE_MAX_DEPTH are
 * GR_EFORMAT with gr_errmsg() naming the offset and the rule. Allocation is
 * bounded by n (a count is never trusted beyond the bytes left). Returns 0
 * and *out (caller frees with gr_json_free), or a GR_E* code. */
int gr_wire_unpack(const void *p, size_t n, gr_json **out);

/* Checks a decoded body against the field table of (dir, cmd): required
 * fields present, every known field of the right type, ids well-formed.
 * Unknown fields are allowed (forward compatibility). Returns 0 or GR_EINVAL
 * naming the command and field. */
int gr_wire_check(gr_wire_dir dir, int cmd, const gr_json *body);

/* One received, validated message. peer holds the ROUTER routing id
 * (peer_len 0 on a DEALER). */
typedef struct gr_wire_msg {
    int cmd;
    gr_json *body; /* owned: an object */
    uint8_t peer[GR_WIRE_MAX_PEER];
    size_t peer_len;
} gr_wire_msg;

/* Frees the body and zeroes m (safe on a zeroed or cleared msg). */
void gr_wire_msg_clear(gr_wire_msg *m);

/* Counters; the broker exposes them in its metrics. */
typedef struct gr_wire_stats {
    uint64_t received; /* messages accepted */
    uint64_t sent;
    uint64_t dropped;    /* messages rejected, for any of the reasons below */
    uint64_t bad_frames; /* wrong number of frames / missing routing id */
    uint64_t bad_tag;
    uint64_t bad_cmd;    /* unknown command byte or wrong direction */
    uint64_t oversize;   /* body larger than GR_WIRE_MAX_BODY */
    uint64_t bad_body;   /* not msgpack, not a map, trailing bytes, ... */
    uint64_t bad_fields; /* missing or mistyped fields */
    uint64_t send_failed;
} gr_wire_stats;

/* Decodes frames (the routing id, if any, already removed) into *out.
 * Returns 0, or GR_EINVAL/GR_EFORMAT with gr_errmsg() saying why; the
 * matching counter in st (may be NULL) is incremented either way. */
int gr_wire_decode(gr_wire_dir dir, const void *const *frames, const size_t *lens, size_t nframes,
                   gr_wire_msg *out, gr_wire_stats *st);

#define GR_WIRE_NOWAIT 1
/* Receives one whole multipart message from a ZeroMQ socket (all parts are
 * always consumed, even of a rejected message). router: the socket is a
 * ROUTER, frame 0 is the peer's routing id. flags: GR_WIRE_NOWAIT or 0.
 * Returns 0 with *out filled; 1 when nothing was waiting (NOWAIT) or the call
 * was interrupted (EINTR); GR_EINVAL/GR_EFORMAT for a dropped message (out
 * still carries peer/peer_len so the caller can log once per peer); GR_EIO
 * when the socket failed (ETERM, ENOTSOCK). */
int gr_wire_recv(void *sock, gr_wire_dir dir, int router, int flags, gr_wire_msg *out,
                 gr_wire_stats *st);

/* ---- encoding ----
 * msgpack writers appending to a gr_buf; check b->oom once at the end. */
void gr_wire_pk_map(gr_buf *b, uint32_t n);
void gr_wire_pk_arr(gr_buf *b, uint32_t n);
void gr_wire_pk_nil(gr_buf *b);
void gr_wire_pk_bool(gr_buf *b, int v);
void gr_wire_pk_int(gr_buf *b, int64_t v);
void gr_wire_pk_double(gr_buf *b, double v);
void gr_wire_pk_str(gr_buf *b, const char *s);
void gr_wire_pk_strn(gr_buf *b, const char *s, size_t n);
/* A whole gr_json tree (numbers with is_int as ints, others as float64). */
void gr_wire_pk_json(gr_buf *b, const gr_json *j);
/* Parses JSON text and packs it; GR_EFORMAT if it does not parse. */
int gr_wire_pk_json_text(gr_buf *b, const char *json, size_t len);
/* key/value shorthands for map members */
void gr_wire_pk_kv_str(gr_buf *b, const char *key, const char *val);
void gr_wire_pk_kv_int(gr_buf *b, const char *key, int64_t val);
void gr_wire_pk_kv_double(gr_buf *b, const char *key, double val);
void gr_wire_pk_kv_bool(gr_buf *b, const char *key, int val);

/* Sends one message: [peer,] tag, command byte, body (msgpack bytes, must be
 * a map; len 0 sends the empty map). peer/peer_len: routing id on a ROUTER,
 * NULL/0 on a DEALER. Never blocks: a full queue or an unknown peer (ROUTER
 * with ZMQ_ROUTER_MANDATORY) is GR_ENET (EAGAIN) / GR_ENOTFOUND
 * (EHOSTUNREACH); other failures GR_EIO. Counts sent/send_failed in st. */
int gr_wire_send(void *sock, const void *peer, size_t peer_len, int cmd, const void *body,
                 size_t len, gr_wire_stats *st);
/* Same with the body given as a gr_json object. */
int gr_wire_send_json(void *sock, const void *peer, size_t peer_len, int cmd, const gr_json *body,
                      gr_wire_stats *st);

/* Writes a gr_json tree as compact JSON text. sort_keys: object members in
 * byte order of their keys (the canonical form used for memo keys);
 * otherwise in stored order. Integers print as integers, other numbers in
 * shortest round-trip form. Returns 0 or GR_ENOMEM. */
int gr_wire_json_write(gr_buf *b, const gr_json *j, int sort_keys);

/* Deep copy of a tree (NULL on allocation failure, with gr_errmsg set). */
gr_json *gr_wire_json_dup(const gr_json *j);

/* ---- sockets ---- */
/* Linger of the sockets below: messages sent just before zmq_close still
 * go out for this long (zmq_ctx_term waits for them); set ZMQ_LINGER to 0
 * before closing to drop them instead. On the ROUTER it also keeps the
 * messages a peer sent just before disconnecting (libzmq drops them with 0). */
#define GR_WIRE_LINGER_MS 1000
/* A DEALER connected to endpoint (reconnect ivl 100 ms rising to 2 s); NULL
 * with gr_errmsg on failure. Close with zmq_close. */
void *gr_wire_dealer(void *zctx, const char *endpoint);
/* The broker's ROUTER bound to endpoint, with ZMQ_ROUTER_MANDATORY; NULL with
 * gr_errmsg on failure. */
void *gr_wire_router(void *zctx, const char *endpoint);

#endif
