#!/usr/bin/env python3
"""make-tokenizer-refs.py - reference tokenizers and ids from the Hugging Face `tokenizers`
library, for test/test-tokenizer-refs.c.

For each family below, a small BPE (vocabulary 1000) is trained with that family's
normalizer and pre-tokenizer (written as tokenizer.json components, as the family's
published tokenizer.json has them) on a synthetic corpus made here (English, code,
digits, fractions, Vietnamese, CJK, combining marks, emoji; nothing downloaded). Each
trained tokenizer is saved as OUT/<family>.json and the ids that the library gives for
every hard string are written to OUT/expected.json:

  {"tokenizers_version": "...",
   "strings": [...],
   "families": {"<family>": {"file": "<family>.json", "gguf_pre": name or null,
                             "ids": [[...], ...]}}}

Usage: make-tokenizer-refs.py OUTDIR          (needs `tokenizers`)
       make-tokenizer-refs.py --dry OUTDIR    (no library: writes the corpus and strings)
"""
import json
import os
import random
import sys

VOCAB = 1000
SPECIAL = "<|endoftext|>"


def split(regex, behavior="Isolated", invert=False):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": behavior, "invert": invert}


def bytelevel(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def seq(*steps):
    return {"type": "Sequence", "pretokenizers": list(steps)}


# Regexes of the families' tokenizer.json files (the same strings llama.cpp's
# src/llama-vocab.cpp quotes as "original regex from tokenizer.json").
RE_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
             r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
             r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
             r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
            r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
            r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_DSV3 = ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
           "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+")
# DeepSeek LLM's letter class. llama.cpp's copy went through NFC, which maps six
# code points that are canonical singletons (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126,
# U+212A) to others and so empties three ranges; the originals are restored here.
RE_DSLLM_LATIN = ("\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+")
RE_DSLLM_PUNCT = "\\s?[!-/:-~！-／：-～‘-‟　-。]+"
RE_DS_CJK = "[一-龥ࠀ-一가-퟿]+"
RE_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# BLOOM's published class nests a class ("[^(\s|[.,!?…。，、।۔،])]"); this is the same set
# written flat, as llama.cpp has it
RE_BLOOM = " ?[^(\\s|.,!?…。，、।۔،)]+"

NFC = {"type": "NFC"}

# name: (normalizer, pre_tokenizer, byte_level, gguf pre name, model options)
FAMILIES = {
    "llama3": (None, seq(split(RE_LLAMA3), bytelevel(False)), True, "llama-bpe", {"ignore_merges": True}),
    "qwen2": (NFC, seq(split(RE_QWEN2), bytelevel(False)), True, "qwen2", {}),
    "qwen35": (NFC, seq(split(RE_QWEN35), bytelevel(False)), True, "qwen35", {}),
    "gpt2": (None, bytelevel(True), True, "gpt-2", {}),
    "mpt": (NFC, bytelevel(True), True, "mpt", {}),
    "deepseek-llm": ({"type": "Sequence", "normalizers": []},
                     seq(split("[\r\n]"), split(RE_DSLLM_LATIN), split(RE_DSLLM_PUNCT), split("\\s+$"),
                         split(RE_DS_CJK), {"type": "Digits", "individual_digits": False}, bytelevel(False)),
                     True, "deepseek-llm", {}),
    "deepseek-coder": (None, seq(split("[\r\n]"), split("\\s?\\p{L}+"), split("\\s?\\p{P}+"), split(RE_DS_CJK),
                                 {"type": "Digits", "individual_digits": True}, bytelevel(False)),
                       True, "deepseek-coder", {}),
    "deepseek-v3": (None, seq(split("\\p{N}{1,3}"), split("[一-龥぀-ゟ゠-ヿ]+"), split(RE_DSV3), bytelevel(False)),
                    True, "deepseek-v3", {}),
    "falcon": (None, seq({"type": "Punctuation", "behavior": "Contiguous"}, bytelevel(True),
                         {"type": "Digits", "individual_digits": False}, split("[0-9][0-9][0-9]")),
               True, "falcon", {}),
    "starcoder": (None, seq({"type": "Digits", "individual_digits": True}, bytelevel(True)), True, "starcoder", {}),
    "command-r": (NFC, seq({"type": "Digits", "individual_digits": True}, bytelevel(True)), True, "command-r", {}),
    "tekken": (None, seq(split(RE_TEKKEN), bytelevel(False)), True, "tekken", {"ignore_merges": True}),
    "gpt-4o": (None, seq(split(RE_GPT4O), bytelevel(False)), True, "gpt-4o", {}),
    "bloom": (None, seq(split(RE_BLOOM), bytelevel(False)), True, "bloom", {}),
    # SentencePiece-style: the Llama 2 tokenizer.json layout (normalizer Prepend + Replace,
    # no pre-tokenizer, byte fallback)
    "llama2-spm": ({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                         {"type": "Replace", "pattern": {"String": " "},
                                                          "content": "\u2581"}]},
                   None, False, None, {"byte_fallback": True, "fuse_unk": True}),
    # Metaspace pre-tokenizer over NFKC-normalized text, unknown characters fused into one unk
    "metaspace-nfkc": ({"type": "NFKC"},
                       {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
                       False, None, {"fuse_unk": True}),
}

# ---- text ----------------------------------------------------------------------------

WORDS = ("the of and to in is was that for it with as his on be at by had are but from or "
         "have an they which one you were all we her she there would their will when who him "
         "been has more if no out so said what up its about into than them can only other "
         "time new some could these two may first then do any like my now over such our man "
         "me even most made after also did many before must through years where much way "
         "don't I'm we'll they've you're it's she'd HE'S WE'RE THEY'LL It'S").split()
CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; i++) {\n\ts += a[i];\n}\n",
    "if x == 10 and y != 20:\n        print(\"ok\")\n",
    "const y = obj?.value ?? 42;  // comment\n",
    "#include <stdio.h>\nint main(void) { return 0; }\n",
    "SELECT id, name FROM users WHERE age >= 18;\n",
    "x += 1; y -= 2; z **= 3; w //= 4\n",
    "    \"key\": [1, 2, 3],\n    \"other\": {\"a\": null}\n",
    "https://example.com/path?q=1&r=2#frag\n",
    "$ git commit -m 'fix: off-by-one'\n",
]
UNICODE = [
    "Tiếng Việt có dấu: người, được, những, trường, Nguyễn",
    "Việt Nam ở Đông Nam Á; phở bò và bánh mì",
    "中文文本测试，我们今天去公园。你好世界！",
    "日本語のテキスト、ひらがなとカタカナ。東京タワー",
    "한국어 문장입니다. 안녕하세요 세계",
    "Ελληνικά: καλημέρα κόσμε",
    "Русский текст: привет, мир! Съешь же ещё этих булок.",
    "العربية: مرحبا بالعالم",
    "हिन्दी पाठ: नमस्ते दुनिया",
    "café naïve façade résumé coöperate Ångström",
    "cafe\u0301 nai\u0308ve e\u0300 o\u0302 a\u030a",
    "emoji 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷",
    "½ ¼ ¾ ² ³ ¹ ⅓ ⅔ ① ② Ⅷ ٣ ٤ ๓ ５ ６",
    "ﬁ ﬂ ﬀ ＡＢＣ ｱｲｳ ℃ ™ № ㎏ Ⅸ",
    "math: x² + y² = z², ∑ᵢ aᵢ ≤ ∞, α→β",
]


def corpus(rng):
    lines = []
    for _ in range(2500):
        k = rng.random()
        if k < 0.45:
            n = rng.randint(4, 18)
            s = " ".join(rng.choice(WORDS) for _ in range(n))
            if rng.random() < 0.3:
                s = s.capitalize()
            s += rng.choice([".", ",", "!", "?", ":", ";", "", "..."])
            if rng.random() < 0.3:
                s += " " + str(rng.randint(0, 10 ** rng.randint(1, 7)))
            lines.append(s)
        elif k < 0.65:
            lines.append(rng.choice(CODE))
        elif k < 0.85:
            lines.append(rng.choice(UNICODE))
        else:
            a, b = rng.randint(0, 99999), rng.randint(0, 999)
            lines.append(rng.choice([f"{a}.{b}", f"{a},{b}", f"{a}-{b}", f"({a})", f"{a}%",
                                     f"${a}.{b:02d}", f"{a} ½", f"{b}/{a + 1}", f"1e{b}", f"0x{a:x}"]))
    return lines


def hard_strings(rng):
    s = [
        "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t x", "a\tb", "a \tb",
        "hello world", "Hello World", "HELLO WORLD", " hello", "hello ", "hello  world", "hello   world  ",
        "don't", "I'm", "we'll", "they've", "you're", "it's", "she'd", "HE'S", "WE'RE", "THEY'LL",
        "It'S", "'s", "'ll'", "''", "rock 'n' roll", "the cat's toy", "O'Neil's", "l'homme",
        "0", "7", "42", "123", "1234", "12345", "123456", "1234567", "3.14159", "1,000,000", "-17",
        "+3", "1e-9", "0x1F", "2024-06-01", "12:30:45", "$19.99", "50%", "#1", "v1.2.3",
        "4 ½", "4½", "½", " ½", "1¼ cups", "¾", "x² y³", "10¹", "⅓ ⅔", "①②③", "Ⅷ Ⅸ", "٣٤٥", "๓", "５６", "1０",
        "Tiếng Việt", "người", "được", "trường", "Nguyễn", "Đông Nam Á", "ở", "ờ", "phở",
        "e\u0301", "cafe\u0301", "nai\u0308ve", "a\u0300\u0301\u0302", "\u0301", " \u0301",
        "\u0301a", "Å", "A\u030a", "Ω", "\u2126", "ﬁ", "ﬁle", "ＡＢＣ", "ｱｲｳ", "℃", "™", "㎏",
        "中文", "我们今天去公园。", "你好，世界！", "日本語", "ひらがな", "カタカナ", "東京タワー",
        "한국어", "안녕하세요", "漢字かな交じり文", "中文English混合", "English中文",
        "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇫🇷", "a😀b", " 😀 ", "😀😀😀",
        "Ελληνικά", "привет, мир!", "مرحبا", "नमस्ते", "ไทย", "עברית",
        "def f(x):\n    return x\n", "\tif (a) {\n\t\tb();\n\t}", "    indented", "x = [1, 2, 3]",
        "a==b", "a!=b", "a->b", "a=>b", "a::b", "a...b", "<div class=\"x\">", "/* c */", "// c",
        "https://example.com/a?b=1", "user@example.com", "C:\\path\\file.txt", "~/.bashrc",
        "!!!", "???", "...", "—", "–", "«quoted»", "“quoted”", "‘single’", "¿Qué?", "¡Hola!",
        "(a)", "[b]", "{c}", "<d>", "a.b.c", "a,b,c", "a;b", "a|b", "a^b", "a`b`", "a~b", "a$b", "a+b",
        "\u00a0", "a\u00a0b", "a\u3000b", "a\u2009b", "a\u200bb", "a\u0085b", "a\u2028b", "\u000b", "\u000c",
        "  \n\n  x", "x  \n", "x\n  ", "x \n\n y", "\n \n", "end.\n", "line1\nline2\r\nline3",
        "tab\there", "a\t\t\tb", "trailing   ", "   leading", "mixed \t \n whitespace",
        "İstanbul", "straße", "ǅ", "ǈ", "ﬆ", "Ⅻ", "ǲ", "ʼn", "ΐ",
        "hello<|endoftext|> world", "<|endoftext|>", "a <|endoftext|>b", "<s>hi</s>", "x <unk> y",
        "x" * 40, "ab" * 20, "1" * 25, " " * 17, "\n" * 5, "😀" * 4,
    ]
    pieces = ["the", " cat", "'s", " 12", "345", " ½", "Việt", "中文", "😀", "\n", "\t", "  ", "x=1;",
              " don't", "ﬁ", "e\u0301", "—", " (", ")", "ǅ", "٣", "②", "ア", "한", "...", "  \n", "HE'S", "http://a.b"]
    while len(s) < 320:
        n = rng.randint(2, 7)
        s.append("".join(rng.choice(pieces) for _ in range(n)))
    return s


# ---- training --------------------------------------------------------------------------


def train_family(name, spec, lines):
    from tokenizers import Tokenizer, trainers

    norm, pre, byte_level, _, opts = spec
    model = {"type": "BPE", "dropout": None, "unk_token": None if byte_level else "<unk>",
             "continuing_subword_prefix": None, "end_of_word_suffix": None,
             "fuse_unk": opts.get("fuse_unk", False), "byte_fallback": opts.get("byte_fallback", False),
             "ignore_merges": opts.get("ignore_merges", False), "vocab": {}, "merges": []}
    if byte_level:
        decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    else:
        decoder = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    skel = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": norm, "pre_tokenizer": pre, "post_processor": None, "decoder": decoder, "model": model}
    tok = Tokenizer.from_str(json.dumps(skel))
    special = [SPECIAL] if byte_level else ["<unk>", "<s>", "</s>"]
    kw = dict(vocab_size=VOCAB, min_frequency=2, special_tokens=special, show_progress=False)
    if byte_level:
        from tokenizers import pre_tokenizers
        kw["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
    else:
        kw["limit_alphabet"] = 160  # rare characters stay out: byte fallback / unk get exercised
    tok.train_from_iterator(lines, trainers.BpeTrainer(**kw))
    j = json.loads(tok.to_str())
    m = j["model"]
    # the trainer keeps the model options; say so rather than assume it
    for k in ("byte_fallback", "ignore_merges", "fuse_unk"):
        if bool(m.get(k)) != bool(model[k]):
            m[k] = model[k]
    if opts.get("byte_fallback"):
        nxt = max(m["vocab"].values()) + 1
        for b in range(256):
            p = "<0x%02X>" % b
            if p not in m["vocab"]:
                m["vocab"][p] = nxt
                nxt += 1
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False)), j


def main():
    args = sys.argv[1:]
    dry = "--dry" in args
    args = [a for a in args if a != "--dry"]
    if len(args) != 1:
        sys.exit(__doc__)
    out = args[0]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20260612)
    lines = corpus(rng)
    strings = hard_strings(random.Random(7))
    if dry:
        with open(os.path.join(out, "corpus.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        with open(os.path.join(out, "strings.json"), "w", encoding="utf-8") as f:
            json.dump(strings, f, ensure_ascii=False, indent=0)
        print("dry: %d corpus lines, %d strings, %d families" % (len(lines), len(strings), len(FAMILIES)))
        return
    import tokenizers
    res = {"tokenizers_version": tokenizers.__version__, "strings": strings, "families": {}}
    failed = []
    for name, spec in FAMILIES.items():
        try:
            tok, j = train_family(name, spec, lines)
        except Exception as e:  # report every family, not only the first failure
            failed.append(name)
            print("FAILED %s: %r" % (name, e))
            continue
        with open(os.path.join(out, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
        ids = [tok.encode(s, add_special_tokens=False).ids for s in strings]
        res["families"][name] = {"file": name + ".json", "gguf_pre": spec[3], "ids": ids}
        print("%-15s vocab %d merges %d, %d ids" % (name, len(j["model"]["vocab"]), len(j["model"]["merges"]),
                                                   sum(map(len, ids))))
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        f.write('{"tokenizers_version": %s,\n"strings": [\n' % json.dumps(res["tokenizers_version"]))
        f.write(",\n".join(json.dumps(s, ensure_ascii=False) for s in strings))
        f.write('],\n"families": {\n')
        fams = []
        for name, fam in res["families"].items():
            body = ",\n".join(json.dumps(x) for x in fam["ids"])
            fams.append('%s: {"file": %s, "gguf_pre": %s, "ids": [\n%s]}' % (
                json.dumps(name), json.dumps(fam["file"]), json.dumps(fam["gguf_pre"]), body))
        f.write(",\n".join(fams))
        f.write("}}\n")
    if failed:
        sys.exit("failed: " + " ".join(failed))


if __name__ == "__main__":
    main()
