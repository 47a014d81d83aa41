/* gr_tokens: token-id data for evaluation — nanoGPT-style .bin files
 * (little-endian uint16 or uint32 ids), .jsonl files with one JSON array of
 * ids per line, their cutting into scored windows, and multiple-choice .jsonl
 * items {"context": [ids], "choices": [[ids], ...], "label": k}. */
#ifndef GR_TOKENS_H
#define GR_TOKENS_H

#include <stddef.h>
#include <stdint.h>

/* ---- sequences ---- */
typedef struct gr_tokens gr_tokens;

/* Opens token data: a path ending in ".jsonl" is read as one sequence per
 * non-blank line (a JSON array of integer ids, at least 2 of them); any other
 * path as one sequence of little-endian ids of token_dtype ("uint16" or
 * "uint32"; NULL means uint16), mapped read-only. Every id must be below
 * vocab (0 = unchecked): the error names the file and the line (jsonl) or
 * the token position (bin). An empty file, a size that is not a multiple of
 * the id size, or fewer than 2 tokens are GR_EINVAL. */
gr_tokens *gr_tokens_open(const char *path, const char *token_dtype, uint32_t vocab);
/* The .jsonl reader on a buffer (what names it in errors). */
gr_tokens *gr_tokens_parse_jsonl(const char *buf, size_t len, const char *what, uint32_t vocab);
void gr_tokens_close(gr_tokens **t);

size_t gr_tokens_count(const gr_tokens *t); /* sequences */
uint64_t gr_tokens_len(const gr_tokens *t, size_t seq);
uint64_t gr_tokens_total(const gr_tokens *t); /* tokens in all sequences */
/* Token i of sequence seq (i < gr_tokens_len). */
uint32_t gr_tokens_at(const gr_tokens *t, size_t seq, uint64_t i);

/* A window of one sequence: tokens [start, start+len). The model sees all
 * of them; the next-token predictions at window positions first .. len-2
 * are scored (targets at positions first+1 .. len-1). */
typedef struct gr_window {
    size_t seq;
    uint64_t start;
    int len;
    int first;
} gr_window;

/* Cuts every sequence into windows of at most seq_len tokens, one starting
 * every stride tokens (1 <= stride <= seq_len), the last one shorter; a
 * window scores only targets no earlier window scored, so every token but
 * the first of each sequence is scored exactly once when stride < seq_len
 * (with stride == seq_len the first token of each window is context only).
 * *out (caller frees) gets *n windows in sequence order. */
int gr_tokens_windows(const gr_tokens *t, int seq_len, int stride, gr_window **out, size_t *n);
/* Copies the tokens of w into dst (w->len ids). */
void gr_tokens_get(const gr_tokens *t, const gr_window *w, int32_t *dst);

/* ---- multiple choice ---- */
typedef struct gr_choice_item {
    int line;  /* 1-based line in the file */
    int label; /* index of the right choice */
    const uint32_t *context;
    uint32_t context_len; /* >= 1 */
    int nchoices;         /* >= 1 */
    const uint32_t *const *choice;
    const uint32_t *choice_len; /* each >= 1 */
} gr_choice_item;

typedef struct gr_choices gr_choices;

/* Reads a choice .jsonl file: one object per non-blank line with "context"
 * (non-empty array of ids), "choices" (non-empty array of non-empty arrays
 * of ids) and "label" (integer index into choices); other members are
 * ignored. Ids must be below vocab (0 = unchecked). Errors name the file,
 * the line and the field. */
gr_choices *gr_choices_open(const char *path, uint32_t vocab);
gr_choices *gr_choices_parse(const char *buf, size_t len, const char *what, uint32_t vocab);
void gr_choices_close(gr_choices **c);
size_t gr_choices_count(const gr_choices *c);
const gr_choice_item *gr_choices_item(const gr_choices *c, size_t i);

#endif
