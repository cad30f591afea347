/* tokenizer_pre_table.c - GGUF tokenizer.ggml.pre names -> normalizer and pre-tokenizer
 * steps, one row per name.
 *
 * The rows reproduce the family's Hugging Face tokenizer.json (its normalizer and
 * pre_tokenizer) as far as it is known; the regex strings are format data transcribed
 * from llama.cpp's src/llama-vocab.cpp (llm_tokenizer_bpe, the "original regex from
 * tokenizer.json" where it quotes one) and from the families' tokenizer.json files.
 * Where a family's tokenizer.json has Digits, Punctuation or a ByteLevel regex step,
 * the row has that step (llama.cpp writes those as regexes, which differs on a few
 * characters: Digits after ByteLevel sees the byte alphabet, where the bytes 0xB2,
 * 0xB3, 0xB9, 0xBC-0xBE are the numbers ² ³ ¹ ¼ ½ ¾).
 * Checked against the `tokenizers` library: the families of test/data/tokenizers/.
 */
#include "tokenizer_internal.h"

#include <string.h>

/* ---- regexes (format data, see the file comment) ----------------------------------- */

#define RE_LLAMA3                                                                                                      \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|" \
    "\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                                       \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"     \
    "\\s+(?!\\S)|\\s+"
#define RE_QWEN35                                                                                                      \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|"     \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_TEKKEN                                                                                                      \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?"    \
    "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|"       \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_GPT4O                                                                                                       \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|" \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|" \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_TINY_AYA                                                                                                    \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|" \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|" \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_DSV3                                                                                                        \
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|" \
    "\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
#define RE_SPARK                                                                                                       \
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|"   \
    "[\r\n]|\\s+(?!\\S)|\\s+"
/* DeepSeek LLM's letter class. llama.cpp's copy went through NFC, which maps six code
 * points that are canonical singletons (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A)
 * to others and so empties three ranges; the originals are restored here. */
#define RE_DSLLM_LATIN                                                                                                 \
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-"         \
    "\u1F7Dᾀ-ᾴᾶ-ᾼ\u1FBEῂ-ῄῆ-ῌῐ-\u1FD3ῖ-\u1FDBῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212A-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎ"    \
    "ꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+"
#define RE_DSLLM_PUNCT "\\s?[!-/:-~！-／：-～‘-‟　-。]+"
#define RE_DS_CJK "[一-龥ࠀ-一가-퟿]+"
#define RE_KANA_CJK "[一-龥぀-ゟ゠-ヿ]+"
/* BLOOM's tokenizer.json nests a class ("[^(\\s|[.,!?…。，、।۔،])]"); the same set flat */
#define RE_BLOOM " ?[^(\\s|.,!?…。，、।۔،)]+"
#define RE_SEED_CODER                                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\r\n]+|\\s*[\r\n]+|"          \
    "\\s+(?!\\S)|\\s+"
#define RE_BAILING                                                                                                     \
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*[\\r\\n]|"          \
    "\\s+(?!\\S)|\\s+"
#define RE_UFAKZEKA                                                                                                    \
    "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_EXAONE_MOE                                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}|"                  \
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"
#define RE_MINICPM5                                                                                                    \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"    \
    "\\s+(?!\\S)|\\s+"
#define RE_JAIS2                                                                                                       \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|" \
    "\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|"          \
    "\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}"
#define RE_YOUTU_CJK "[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+"
#define RE_YOUTU                                                                                                       \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|"  \
    "'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"                       \
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}|"                    \
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA_CPP_DEFAULT_PUNCT "[\\p{P}\\$\\+<=>\\^~\\|]+"
#define RE_LINES "[^\\n]+|[\\n]+"

/* ---- steps -------------------------------------------------------------------------- */

enum {
    T_END = 0,
    T_SPLIT,        /* regex, Isolated */
    T_DIGITS,       /* Digits, individual_digits true */
    T_DIGIT_RUNS,   /* Digits, individual_digits false */
    T_PUNCT,        /* Punctuation, Contiguous */
    T_BYTES,        /* ByteLevel, use_regex false */
    T_BYTES_GPT2    /* ByteLevel, use_regex true */
};

typedef struct {
    int kind;
    const char *re;
} tstep;

typedef struct {
    const char *name;
    const char *norm;   /* Unicode normalization form or NULL */
    int ignore_merges;  /* model.ignore_merges of the family */
    tstep steps[7];
} pre_row;

#define SPLIT(r) {T_SPLIT, r}
#define BYTES {T_BYTES, NULL}
#define BYTES_GPT2 {T_BYTES_GPT2, NULL}
#define DIGITS {T_DIGITS, NULL}
#define DIGIT_RUNS {T_DIGIT_RUNS, NULL}
#define PUNCT {T_PUNCT, NULL}

#define LLAMA3_STEPS {SPLIT(RE_LLAMA3), BYTES}
#define QWEN2_STEPS {SPLIT(RE_QWEN2), BYTES}
#define GPT2_STEPS {BYTES_GPT2}
#define STARCODER_STEPS {DIGITS, BYTES_GPT2}
#define DSV3_STEPS {SPLIT("\\p{N}{1,3}"), SPLIT(RE_KANA_CJK), SPLIT(RE_DSV3), BYTES}
#define GPT4O_STEPS {SPLIT(RE_GPT4O), BYTES}
#define BLOOM_STEPS {SPLIT(RE_BLOOM), BYTES}
#define BAILING_STEPS {SPLIT(RE_BAILING), BYTES}

static const pre_row ROWS[] = {
    /* llama.cpp's steps for a vocabulary without a name */
    {"default", NULL, 0,
     {SPLIT(RE_LLAMA_CPP_DEFAULT_PUNCT), SPLIT(SKS__RE_GPT2), SPLIT("\\p{N}+"), SPLIT("[0-9][0-9][0-9]"), BYTES}},
    /* Llama 3 and the tiktoken cl100k split */
    {"llama-bpe", NULL, 1, LLAMA3_STEPS},
    {"llama3", NULL, 1, LLAMA3_STEPS},
    {"llama-v3", NULL, 1, LLAMA3_STEPS},
    {"falcon3", NULL, 1, LLAMA3_STEPS},
    {"falcon-h1", NULL, 1, LLAMA3_STEPS},
    {"pixtral", NULL, 1, LLAMA3_STEPS},
    {"midm-2.0", NULL, 1, LLAMA3_STEPS},
    {"lfm2", NULL, 1, LLAMA3_STEPS},
    {"dbrx", NULL, 0, LLAMA3_STEPS},
    {"smaug-bpe", NULL, 0, LLAMA3_STEPS},
    {"chatglm-bpe", NULL, 0, LLAMA3_STEPS},
    {"glm4", NULL, 0, LLAMA3_STEPS},
    {"jais-2", NULL, 0, {SPLIT(RE_JAIS2), BYTES}},
    /* Qwen 2: single digits; Qwen's tokenizer.json has an NFC normalizer */
    {"qwen2", "NFC", 0, QWEN2_STEPS},
    {"qwen35", "NFC", 0, {SPLIT(RE_QWEN35), BYTES}},
    {"deepseek-r1-qwen", NULL, 0, QWEN2_STEPS},
    {"megrez", NULL, 0, QWEN2_STEPS},
    {"kormo", NULL, 0, QWEN2_STEPS},
    {"f2llmv2", NULL, 0, QWEN2_STEPS},
    {"stablelm2", NULL, 0, QWEN2_STEPS},
    {"hunyuan", NULL, 0, QWEN2_STEPS},
    {"solar-open", NULL, 0, QWEN2_STEPS},
    {"grok-2", NULL, 0, QWEN2_STEPS},
    {"ufakzeka", NULL, 0, {SPLIT(RE_UFAKZEKA), BYTES}},
    {"laguna", NULL, 0, {SPLIT(RE_LINES), SPLIT(RE_QWEN2), BYTES}},
    {"seed-coder", NULL, 0, {SPLIT(RE_SEED_CODER), BYTES}},
    {"bailingmoe", NULL, 0, BAILING_STEPS},
    {"bailingmoe2", NULL, 0, BAILING_STEPS},
    {"llada-moe", NULL, 0, BAILING_STEPS},
    {"exaone-moe", NULL, 0, {SPLIT(RE_EXAONE_MOE), BYTES}},
    {"minicpm5", NULL, 1, {SPLIT("\\p{N}{1,3}"), SPLIT(RE_MINICPM5), BYTES}},
    /* DeepSeek */
    {"deepseek-llm", NULL, 0,
     {SPLIT("[\r\n]"), SPLIT(RE_DSLLM_LATIN), SPLIT(RE_DSLLM_PUNCT), SPLIT("\\s+$"), SPLIT(RE_DS_CJK), DIGIT_RUNS, BYTES}},
    {"deepseek-coder", NULL, 0,
     {SPLIT("[\r\n]"), SPLIT("\\s?\\p{L}+"), SPLIT("\\s?\\p{P}+"), SPLIT(RE_DS_CJK), DIGITS, BYTES}},
    {"deepseek-v3", NULL, 0, DSV3_STEPS},
    {"hunyuan-dense", NULL, 0, DSV3_STEPS},
    {"joyai-llm", NULL, 0, DSV3_STEPS},
    {"hy_v4", NULL, 0, DSV3_STEPS},
    {"spark2_5", NULL, 0, {SPLIT("\\p{N}{1,3}"), SPLIT(RE_KANA_CJK), SPLIT(RE_SPARK), SPLIT("\\p{N}"), BYTES}},
    {"youtu", NULL, 1, {SPLIT(RE_YOUTU_CJK), SPLIT(RE_YOUTU), BYTES}},
    /* Falcon: punctuation runs, GPT-2's regex, digit runs, then runs of three digits */
    {"falcon", NULL, 0, {PUNCT, BYTES_GPT2, DIGIT_RUNS, SPLIT("[0-9][0-9][0-9]")}},
    /* GPT-2's ByteLevel regex; GPT-NeoX (MPT) adds NFC */
    {"gpt-2", NULL, 0, GPT2_STEPS},
    {"mpt", "NFC", 0, GPT2_STEPS},
    {"olmo", NULL, 0, GPT2_STEPS},
    {"phi-2", NULL, 0, GPT2_STEPS},
    {"jais", NULL, 0, GPT2_STEPS},
    {"trillion", NULL, 0, GPT2_STEPS},
    {"granite-docling", NULL, 0, GPT2_STEPS},
    {"exaone4", NULL, 0, GPT2_STEPS},
    {"gigachat", NULL, 0, GPT2_STEPS},
    {"a.x-4.0", NULL, 0, GPT2_STEPS},
    {"mellum", NULL, 0, GPT2_STEPS},
    {"modern-bert", NULL, 0, GPT2_STEPS},
    {"roberta-bpe", NULL, 0, GPT2_STEPS},
    {"jina-es", NULL, 0, GPT2_STEPS},
    {"jina-de", NULL, 0, GPT2_STEPS},
    {"jina-v1-en", NULL, 0, GPT2_STEPS},
    {"jina-v2-es", NULL, 0, GPT2_STEPS},
    {"jina-v2-de", NULL, 0, GPT2_STEPS},
    {"jina-v2-code", NULL, 0, GPT2_STEPS},
    /* StarCoder: single digits, then GPT-2's regex; Command-R adds NFC */
    {"starcoder", NULL, 0, STARCODER_STEPS},
    {"command-r", "NFC", 0, STARCODER_STEPS},
    {"refact", NULL, 0, STARCODER_STEPS},
    {"smollm", NULL, 0, STARCODER_STEPS},
    {"codeshell", NULL, 0, STARCODER_STEPS},
    {"exaone", NULL, 0, STARCODER_STEPS},
    {"minerva-7b", NULL, 0, STARCODER_STEPS},
    {"mellum2", NULL, 0, STARCODER_STEPS},
    /* Mistral's tekken and GPT-4o (o200k): case-aware letter runs */
    {"tekken", NULL, 1, {SPLIT(RE_TEKKEN), BYTES}},
    {"gpt-4o", NULL, 0, GPT4O_STEPS},
    {"llama4", NULL, 0, GPT4O_STEPS},
    {"minimax-m2", NULL, 0, GPT4O_STEPS},
    {"kanana2", NULL, 0, GPT4O_STEPS},
    {"talkie", NULL, 0, GPT4O_STEPS},
    {"tiny_aya", NULL, 0, {SPLIT("\\d{1,3}(?=(?:\\d{3})*\\b)"), SPLIT(RE_TINY_AYA), BYTES}},
    {"cohere2moe", NULL, 0, {SPLIT("\\d{1,3}(?=(?:\\d{3})*\\b)"), SPLIT(RE_TINY_AYA), BYTES}},
    /* BLOOM and its derivatives: everything up to whitespace or sentence punctuation */
    {"bloom", NULL, 0, BLOOM_STEPS},
    {"gpt3-finnish", NULL, 0, BLOOM_STEPS},
    {"poro-chat", NULL, 0, BLOOM_STEPS},
    {"viking", NULL, 0, {SPLIT(RE_BLOOM), DIGITS, BYTES}},
};

static int add_row_step(sks__textproc *p, const tstep *s, const char *name) {
    switch (s->kind) {
    case T_SPLIT: return sks__textproc_add_split(p, s->re, 0, SKS__SPLIT_ISOLATED, 0, name);
    case T_DIGITS: return sks__textproc_add_digits(p, 1);
    case T_DIGIT_RUNS: return sks__textproc_add_digits(p, 0);
    case T_PUNCT: return sks__textproc_add_punct(p, SKS__SPLIT_CONTIGUOUS);
    case T_BYTES: return sks__textproc_add_bytelevel(p, 0, 0, name);
    default: return sks__textproc_add_bytelevel(p, 0, 1, name);
    }
}

int sks__textproc_from_gguf_pre(const char *pre, size_t len, const char *name, sks__textproc **out,
                                int *ignore_merges) {
    *out = NULL;
    const pre_row *row = NULL;
    for (size_t k = 0; k < sizeof ROWS / sizeof ROWS[0] && !row; k++)
        if (strlen(ROWS[k].name) == len && memcmp(ROWS[k].name, pre, len) == 0) row = &ROWS[k];
    if (!row)
        return sks_fail(SKS_EUNSUPPORTED,
                        "%s: tokenizer.ggml.pre \"%.*s\": unknown pre-tokenizer (docs/tokenizers.md lists the known "
                        "names; use --tokenizer with the model's tokenizer.json)",
                        name, (int)(len > 64 ? 64 : len), pre);
    sks__textproc *p;
    int rc = sks__textproc_new(&p);
    if (!rc && row->norm) rc = sks__textproc_add_form(p, row->norm);
    for (int i = 0; !rc && i < 7 && row->steps[i].kind != T_END; i++) rc = add_row_step(p, &row->steps[i], name);
    if (rc) {
        sks__textproc_free(p);
        return rc;
    }
    *ignore_merges = row->ignore_merges;
    *out = p;
    return 0;
}

/* Name of row k, NULL past the end (for tests and docs). */
const char *sks__gguf_pre_name(int k) {
    return k >= 0 && (size_t)k < sizeof ROWS / sizeof ROWS[0] ? ROWS[k].name : NULL;
}
