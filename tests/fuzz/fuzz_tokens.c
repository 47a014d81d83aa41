/* fuzz_tokens: hostile evaluation data. Byte 0 picks the reader: even — the
 * rest is a token .jsonl (one array of ids per line), cut into windows with
 * seq_len and stride from bytes 1-2; odd — a multiple-choice .jsonl. Vocab
 * 1000. Accepted data are checked against the rules the readers promise. */
#include "gr_tokens.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define VOCAB 1000

static void tokens(const char *p, size_t n, int seq_len, int stride)
{
    gr_tokens *t = gr_tokens_parse_jsonl(p, n, "fuzz.jsonl", VOCAB);
    if (!t) return;
    uint64_t total = 0;
    for (size_t s = 0; s < gr_tokens_count(t); s++) {
        if (gr_tokens_len(t, s) < 2) abort();
        for (uint64_t i = 0; i < gr_tokens_len(t, s); i++)
            if (gr_tokens_at(t, s, i) >= VOCAB) abort();
        total += gr_tokens_len(t, s);
    }
    if (total != gr_tokens_total(t)) abort();
    gr_window *w = NULL;
    size_t nw = 0;
    if (!gr_tokens_windows(t, seq_len, stride, &w, &nw)) {
        uint64_t scored = 0;
        int32_t buf[256];
        for (size_t i = 0; i < nw; i++) {
            if (w[i].len > seq_len || w[i].len < 2 || w[i].first < 0 || w[i].first >= w[i].len - 1)
                abort();
            if (w[i].start + (uint64_t)w[i].len > gr_tokens_len(t, w[i].seq)) abort();
            gr_tokens_get(t, &w[i], buf);
            scored += (uint64_t)(w[i].len - 1 - w[i].first);
        }
        /* with stride < seq_len every token but each sequence's first is scored once */
        if (stride < seq_len && scored != total - gr_tokens_count(t)) abort();
        free(w);
    }
    gr_tokens_close(&t);
}

static void choices(const char *p, size_t n)
{
    gr_choices *c = gr_choices_parse(p, n, "fuzz.jsonl", VOCAB);
    if (!c) return;
    for (size_t i = 0; i < gr_choices_count(c); i++) {
        const gr_choice_item *it = gr_choices_item(c, i);
        if (it->context_len < 1 || it->nchoices < 1 || it->label < 0 || it->label >= it->nchoices)
            abort();
        for (uint32_t k = 0; k < it->context_len; k++)
            if (it->context[k] >= VOCAB) abort();
        for (int ch = 0; ch < it->nchoices; ch++) {
            if (it->choice_len[ch] < 1) abort();
            for (uint32_t k = 0; k < it->choice_len[ch]; k++)
                if (it->choice[ch][k] >= VOCAB) abort();
        }
    }
    gr_choices_close(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    const int seq_len = 2 + data[1] % 200, stride = 1 + data[2] % 220; /* some strides invalid */
    if (data[0] % 2) choices((const char *)data + 3, size - 3);
    else tokens((const char *)data + 3, size - 3, seq_len, stride);
    return 0;
}
