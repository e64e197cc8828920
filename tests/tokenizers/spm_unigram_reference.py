#!/usr/bin/env python3
"""The reference ids for unigram_wordpiece_tests' [spm_reference] case, from the real library.

Usage: spm_unigram_reference.py OUT_DIR

Trains three tiny unigram models with Debian's `spm_train` (package sentencepiece) on a
generated corpus of a few KB, in OUT_DIR, and writes OUT_DIR/reference.json: for each model
its path, and the ids Python's sentencepiece (package python3-sentencepiece) gives for every
text in TEXTS. For the first model it also writes two tokenizer.json files built the way
transformers converts XLM-R's sentencepiece.bpe.model (XLMRobertaConverter: the current
Precompiled + Strip + Replace normalizer with Metaspace, and the 2020 files' Precompiled
with WhitespaceSplit + Metaspace). Exits non-zero with a message if a tool is missing.
"""
import base64
import json
import os
import shutil
import subprocess
import sys

# Varied texts: accents (composed and decomposed), digits, punctuation, CJK, Hangul,
# Cyrillic, Greek, Arabic, Devanagari, Thai, emoji, NFKC cases (full width, ligatures,
# mathematical letters), whitespace runs, control characters, empty strings.
TEXTS = [
    "Hello world",
    "  leading and trailing spaces  ",
    "multiple    spaces\tand\ttabs\nand newlines",
    "Café crème brûlée à la française",
    "naïve façade coöperate",
    "Straße Übermaß Öl",
    "1234567890 3.14159 1,000,000",
    "Price: $19.99 (20% off!)",
    "e-mail: someone@example.com, url https://example.org/path?q=1",
    "東京は日本の首都です。",
    "北京欢迎你！中文测试",
    "한국어 텍스트입니다",
    "Привет, мир! Как дела?",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "emoji 😀🎉👍🏽 and ❤️",
    "full-width ＡＢＣ１２３ and ｶﾀｶﾅ",
    "ligatures ﬁ ﬂ and ① ② ™",
    "decomposed e\u0301 vs \u00e9, a\u0300",
    "zero\u200bwidth\u200cjoiner\u200d",
    "non-breaking\u00a0space and\u3000ideographic space",
    "ALL CAPS SHOUTING",
    "MiXeD CaSe WoRdS",
    "punctuation!!! ??? ... ,,, ;;; :::",
    "quotes \u201ccurly\u201d \u2018single\u2019 \u00abguillemets\u00bb",
    "dashes \u2013 \u2014 \u2010 and ellipsis \u2026",
    "",
    " ",
    "\t\n",
    "a",
    "rare symbols: \u2603 \u265e \u2318 \u2699",
    "\u01c5 \u01c8 \u01cb titlecase digraphs",
    "control\x01chars\x7f here",
    "The quick brown fox jumps over the lazy dog.",
    "repeated aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "\u00dcn\u00efc\u00f6d\u00e9 w\u00efth l\u00f6t\u0161 \u00f6f d\u00efacr\u00eft\u00efcs",
    "mathematical \U0001d400\U0001d401\U0001d402 \U0001d7cf\U0001d7d0\U0001d7d1",
    "user symbols <sep> and [Q] inside<sep>",
    "a literal lower block \u2581 here\u2581",
    "null\x00byte",
    "CR LF\r\nline",
    "Hindi \u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e",
    "Thai \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    "replacement char \ufffd and <unk> <s> </s>",
]

# The training text: a few KB of the languages above, repeated so the pieces have counts.
CORPUS_LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, this is a small corpus for a tiny unigram model.",
    "Search engines rank passages by relevance to the query.",
    "A cross-encoder reads the query and the passage together.",
    "Prices rose 3.5% in 2023; the index closed at 1,234.56 points.",
    "Contact us at info@example.com or visit https://example.com/docs.",
    "Café, crème brûlée, naïve façade, à la française, déjà vu.",
    "Straße, Übermaß, Öl, Äpfel, schön, Grüße aus München.",
    "Привет, как дела? Москва — столица России.",
    "Γειά σου κόσμε, η Αθήνα είναι η πρωτεύουσα.",
    "東京は日本の首都です。北京欢迎你。中文测试文本。",
    "한국어 텍스트입니다. 서울은 한국의 수도입니다.",
    "مرحبا بالعالم، هذه جملة عربية قصيرة.",
    "हिन्दी भाषा भारत में बोली जाती है।",
    "ภาษาไทยเป็นภาษาราชการของประเทศไทย",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14159",
    "Punctuation: ! ? . , ; : ( ) [ ] { } \" ' - -- ...",
    "UPPER CASE and lower case and Title Case Words.",
    "Emoji are fun 😀 🎉 👍 and hearts ❤️ too.",
    "<sep> separates parts and [Q] marks a question.",
]


def fail(message):
    print("spm_unigram_reference.py: " + message, file=sys.stderr)
    sys.exit(2)


def charsmap_of(model_bytes):
    """NormalizerSpec.precompiled_charsmap (ModelProto field 3, its field 2), read from the
    protobuf wire format without a protobuf library."""

    def varint(buf, pos):
        value = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, pos

    def fields(buf):
        pos = 0
        while pos < len(buf):
            tag, pos = varint(buf, pos)
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                value, pos = varint(buf, pos)
            elif wire == 1:
                value, pos = buf[pos:pos + 8], pos + 8
            elif wire == 2:
                n, pos = varint(buf, pos)
                value, pos = buf[pos:pos + n], pos + n
            elif wire == 5:
                value, pos = buf[pos:pos + 4], pos + 4
            else:
                raise ValueError("wire type %d" % wire)
            yield number, wire, value

    for number, wire, value in fields(model_bytes):
        if number == 3 and wire == 2:
            for n2, w2, v2 in fields(value):
                if n2 == 2 and w2 == 2:
                    return bytes(v2)
    return b""


def xlmr_tokenizer_json(sp, charsmap, legacy):
    """tokenizer.json as transformers' XLMRobertaConverter writes it for this model."""
    vocab = [["<s>", 0.0], ["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0]]
    vocab += [[sp.id_to_piece(i), sp.get_score(i)] for i in range(3, sp.get_piece_size())]
    vocab += [["<mask>", 0.0]]
    precompiled = {"type": "Precompiled",
                   "precompiled_charsmap": base64.b64encode(charsmap).decode("ascii")}
    if legacy:  # the hub's 2020 conversions (xlm-roberta-base)
        normalizer = precompiled
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}]}
    else:  # transformers' SpmConverter today
        normalizer = {"type": "Sequence", "normalizers": [
            precompiled,
            {"type": "Strip", "strip_left": False, "strip_right": True},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "\u2581"}]}
        pre_tokenizer = {"type": "Metaspace", "replacement": "\u2581",
                         "prepend_scheme": "always", "split": True}
    special = [("<s>", 0), ("<pad>", 1), ("</s>", 2), ("<unk>", 3), ("<mask>", len(vocab) - 1)]
    added = [{"id": i, "content": c, "single_word": False, "lstrip": c == "<mask>",
              "rstrip": False, "normalized": False, "special": True} for c, i in special]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                           "trim_offsets": True, "add_prefix_space": True},
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": False},
    }


def main():
    if len(sys.argv) != 2:
        fail("usage: spm_unigram_reference.py OUT_DIR")
    out = sys.argv[1]
    spm_train = shutil.which("spm_train") or ("/usr/bin/spm_train"
                                              if os.path.exists("/usr/bin/spm_train") else None)
    if spm_train is None:
        fail("spm_train not found: install the Debian package `sentencepiece` "
             "(scripts/install-deps does)")
    try:
        import sentencepiece
    except ImportError:
        fail("Python module sentencepiece not found for " + sys.executable +
             ": install the Debian package `python3-sentencepiece` (scripts/install-deps does)")
    os.makedirs(out, exist_ok=True)
    corpus = os.path.join(out, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        for round_ in range(6):
            for i, line in enumerate(CORPUS_LINES):
                f.write(CORPUS_LINES[(i + round_) % len(CORPUS_LINES)] + " " + line + "\n")

    common = ["--input=" + corpus, "--model_type=unigram", "--hard_vocab_limit=false",
              "--num_threads=1", "--minloglevel=2"]
    models = [
        # XLM-R-like: nmt_nfkc, rare characters left unknown.
        ("nmt_nfkc", ["--vocab_size=400", "--character_coverage=0.995"]),
        # Byte fallback, user-defined symbols, case-folding NFKC rules.
        ("bytes_nfkc_cf", ["--vocab_size=600", "--byte_fallback=true",
                           "--user_defined_symbols=<sep>,[Q]",
                           "--normalization_rule_name=nfkc_cf",
                           "--character_coverage=0.99"]),
        # No rules, no dummy prefix, whitespace kept, digits split, a control symbol.
        ("identity_raw", ["--vocab_size=300", "--normalization_rule_name=identity",
                          "--add_dummy_prefix=false", "--remove_extra_whitespaces=false",
                          "--split_digits=true", "--control_symbols=<ctl>"]),
    ]
    reference = {"texts": TEXTS, "models": [], "tokenizer_json": []}
    for name, flags in models:
        prefix = os.path.join(out, name)
        run = subprocess.run([spm_train] + common + ["--model_prefix=" + prefix] + flags,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if run.returncode != 0:
            fail("spm_train failed for %s:\n%s" % (name, run.stdout.decode(errors="replace")))
        sp = sentencepiece.SentencePieceProcessor(model_file=prefix + ".model")
        ids = [sp.encode(text) for text in TEXTS]
        reference["models"].append({"name": name, "path": prefix + ".model", "ids": ids})
        if name == "nmt_nfkc":
            with open(prefix + ".model", "rb") as f:
                charsmap = charsmap_of(f.read())
            if not charsmap:
                fail("the nmt_nfkc model has no precompiled_charsmap")
            # XLMRobertaTokenizer's ids: fairseq's offset over sentencepiece's.
            xlmr = [[3 if i == 0 else i + 1 for i in row] for row in ids]
            for style in ("current", "legacy"):
                path = os.path.join(out, "xlmr_%s_tokenizer.json" % style)
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(xlmr_tokenizer_json(sp, charsmap, style == "legacy"), f,
                              ensure_ascii=False)
                reference["tokenizer_json"].append({"name": style, "path": path, "ids": xlmr})
    with open(os.path.join(out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
