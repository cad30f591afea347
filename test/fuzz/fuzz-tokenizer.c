/* fuzz-tokenizer.c - libFuzzer target for the three tokenizer file readers
 * (llama2.c tokenizer.bin, SentencePiece tokenizer.model, HF tokenizer.json), the
 * same from-memory entry points that sks_tokenizer_open dispatches to by content.
 * Input: one selector byte (format = data[0] % 3), then the file image. When a file
 * is accepted, the tokenizer must encode and decode text (a fixed sentence and the
 * tail of the input itself, as arbitrary bytes) with every id inside the vocabulary. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loaders/tokenizer_internal.h"

#include <stdio.h>

/* An invariant broke: say which before stopping, so that a crash file explains itself. */
#define SKS__CHECK(cond, ...)                                                                                   \
    do {                                                                                                        \
        if (!(cond)) {                                                                                          \
            fprintf(stderr, "fuzz-tokenizer: " __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                                                \
            __builtin_trap();                                                                                   \
        }                                                                                                       \
    } while (0)

static void sks__fuzz_exercise(const sks_tokenizer *t, const char *text) {
    int32_t *ids = NULL;
    int n = 0;
    int nv = sks_tokenizer_vocab_size(t);
    if (sks_tokenizer_encode(t, text, 1, &ids, &n) == 0) {
        char buf[64];
        for (int i = 0; i < n; i++) {
            SKS__CHECK(ids[i] >= 0 && ids[i] < nv, "id %d outside the vocabulary (%d)", ids[i], nv);
            sks_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], buf, sizeof buf);
            SKS__CHECK(memchr(buf, 0, sizeof buf) != NULL, "decode(%d) is not NUL-terminated", ids[i]);
            const char *p = sks_tokenizer_piece(t, ids[i]);
            SKS__CHECK(p != NULL, "piece(%d) is NULL", ids[i]);
            SKS__CHECK(sks_tokenizer_piece_id(t, p) >= 0, "piece(%d) = '%s' has no id", ids[i], p);
        }
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sks_log_set_level(-1);
    if (size < 1) return 0;
    int sel = data[0] % 3;
    const uint8_t *buf = data + 1;
    size_t len = size - 1;
    sks_tokenizer *t = NULL;
    int rc;
    if (sel == 0) rc = sks__tok_read_llama2c(buf, len, "fuzz/tokenizer.bin", &t);
    else if (sel == 1) rc = sks__tok_read_spm(buf, len, "fuzz/tokenizer.model", &t);
    else rc = sks__tok_read_hf_json((const char *)buf, len, "fuzz/tokenizer.json", &t);
    if (rc == 0) {
        SKS__CHECK(t && sks_tokenizer_vocab_size(t) >= 1, "accepted with an empty vocabulary");
        sks__fuzz_exercise(t, "Hello world, the 2026 caf\xc3\xa9 \xe2\x96\x81 <s>\n\tend.");
        /* the last bytes of the input as text: invalid UTF-8 and NULs included */
        size_t tl = len < 96 ? len : 96;
        char *txt = malloc(tl + 1);
        if (txt) {
            memcpy(txt, buf + len - tl, tl);
            txt[tl] = '\0';
            sks__fuzz_exercise(t, txt);
            free(txt);
        }
        sks_tokenizer_free(t);
    } else {
        SKS__CHECK(!t, "a failed read handed out a tokenizer");
    }
    return 0;
}
