/* sks_tokenizer.h - text <-> token ids for the models sinkscope opens.
 *
 * Formats (detected by content, never by name):
 *   - llama2.c tokenizer.bin: int32 max_token_length, then per token
 *     f32 score, int32 len, len bytes (no NUL). Vocabulary size = number of records.
 *   - SentencePiece tokenizer.model: a protobuf ModelProto (pieces with score and
 *     type, TrainerSpec ids of unk/bos/eos/pad, NormalizerSpec add_dummy_prefix),
 *     BPE or unigram.
 *   - Hugging Face tokenizer.json: model.type "BPE" (vocab + merges), byte-level
 *     (GPT-2 byte-to-unicode) or SentencePiece-style (U+2581 for space, byte fallback),
 *     or "Unigram" (vocab of [piece, score]); added_tokens matched verbatim first.
 *   - GGUF embedded vocabulary (tokenizer.ggml.*): model "llama" (SentencePiece-style)
 *     or "gpt2" (byte-level BPE with merges).
 *
 * Algorithms: SentencePiece-style BPE merges the adjacent pair whose concatenation is
 * a piece of highest score; byte-level BPE merges the pair of lowest merge rank;
 * SentencePiece unigram models take the segmentation of highest total score (Viterbi).
 * All fall back to bytes (<0xAB> pieces, or the byte-level alphabet) for unknown text.
 * See docs/tokenizers.md.
 *
 * Tokenizer files are untrusted input: every length and count is checked against the
 * file size; a bad file gives SKS_EFORMAT / SKS_EBOUNDS with "file: field: problem".
 */
#ifndef SKS_TOKENIZER_H
#define SKS_TOKENIZER_H

#include "sks_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sks_tokenizer sks_tokenizer;

/* Find the tokenizer that belongs to model m:
 *   - explicit_path when not NULL (opened by content);
 *   - directory model: tokenizer.json, then tokenizer.model inside it;
 *   - .safetensors file: the same files beside it;
 *   - .gguf: its embedded vocabulary;
 *   - llama2.c .bin: tokenizer.bin or tok*.bin beside it, preferring one whose
 *     vocabulary size equals the model's.
 * SKS_ENOTFOUND with a message listing where it looked when there is none. */
int sks_tokenizer_open_for_model(const sks_model *m, const char *explicit_path, sks_tokenizer **out);

/* Open a tokenizer file by content (llama2.c .bin, SentencePiece .model,
 * HF tokenizer.json). */
int sks_tokenizer_open(const char *path, sks_tokenizer **out);

/* Build from a GGUF's tokenizer.ggml.* metadata (what open_for_model uses for .gguf).
 * name is used in error messages. */
int sks_tokenizer_open_gguf(const struct sks_gguf *g, const char *name, sks_tokenizer **out);

void sks_tokenizer_free(sks_tokenizer *t); /* NULL is a no-op */

int sks_tokenizer_vocab_size(const sks_tokenizer *t);
int sks_tokenizer_bos(const sks_tokenizer *t); /* -1 if none */
int sks_tokenizer_eos(const sks_tokenizer *t); /* -1 if none */
/* "llama2c", "sentencepiece", "sentencepiece-unigram", "hf-bpe", "hf-bytelevel",
 * "hf-unigram", "gguf-llama", "gguf-gpt2" */
const char *sks_tokenizer_kind(const sks_tokenizer *t);

/* Encode UTF-8 text (invalid UTF-8 bytes go through byte fallback). add_bos prepends
 * BOS when the tokenizer has one. *ids is malloc'd (free it), *n its length. */
int sks_tokenizer_encode(const sks_tokenizer *t, const char *text, int add_bos, int32_t **ids, int *n);

/* Text of token id for printing generated output: SentencePiece U+2581 -> ' ' (and the
 * leading space dropped after BOS, prev = BOS), byte pieces <0xAB> -> that byte,
 * byte-level BPE characters mapped back to bytes. prev is the previous id (-1 if
 * none). Writes at most cap bytes (NUL-terminated, truncated) into buf and returns
 * buf; "" for ids out of range and for control tokens (BOS/EOS). */
const char *sks_tokenizer_decode(const sks_tokenizer *t, int prev, int id, char *buf, size_t cap);

/* The raw piece string of id, NUL-terminated, valid until sks_tokenizer_free;
 * NULL if id is out of range. */
const char *sks_tokenizer_piece(const sks_tokenizer *t, int id);

/* Id of a piece given verbatim, or -1. */
int sks_tokenizer_piece_id(const sks_tokenizer *t, const char *piece);

#ifdef __cplusplus
}
#endif
#endif
