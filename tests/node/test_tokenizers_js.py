"""Our tokenizers against Hugging Face's tokenizers.js (@huggingface/tokenizers, the tokenizer
code of Transformers.js, installed from tests/node/package-lock.json): both read the same
tokenizer.json (and tokenizer_config.json where the checkpoint has one) and must give the same
ids for every text of a varied corpus, and the same special-token templates.

- xlm-roberta, bert: the cross-encoder replicas write_random_cross_encoder writes
  (bge-reranker-v2-m3's Unigram with Metaspace and `<s> A </s></s> B </s>`;
  ms-marco-MiniLM's WordPiece with BertNormalizer lowercasing and accent stripping and
  `[CLS] A [SEP] B [SEP]`, type ids 0 then 1), loaded by tests/tools/tokenizer_ids as the
  server loads them (CrossEncoderTokenizer); pairs as the reranker builds them, untruncated.
- bert-vocab-txt: the same BERT directory without tokenizer.json, so the server falls back to
  vocab.txt + tokenizer_config.json; tokenizers.js still reads the tokenizer.json.
- spm-unigram-current, spm-unigram-legacy: a Unigram with real subword pieces and scores
  (spm_train's, tests/tokenizers/spm_unigram_reference.py) in XLM-R's two tokenizer.json
  layouts, RobertaProcessing's template, without the Precompiled normalizer (see
  without_precompiled); the corpus adds the 43 texts that script encodes.
- gemma: ColPali's Gemma BPE (tests/data/colpali-reference/hf/tokenizer.json, byte fallback),
  through ColPaliTokenizer; ids without special tokens (what ColPali's prompts are built from).
  Its 43 texts that the Rust `tokenizers` library encoded (hf_expected_ids.json) are in the
  corpus, and tokenizers.js must give the Rust ids on them too.
Where tokenizers.js deviates from the Rust library (checked in both sources), the comparison
follows Rust: JS_INPUT and PAIR_TEMPLATES name each case. OpenCLIP's tokenizer is not a
tokenizer.json (tests/data/openclip-reference has none): not here. Needs spm_train and
python3-sentencepiece (scripts/install-deps installs both).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
NODE = os.environ.get("EMBEDSERVE_NODE", "node")
NODE_MODULES = os.environ.get("EMBEDSERVE_NODE_MODULES", "")
TOKENIZER_IDS = os.environ.get("EMBEDSERVE_TOKENIZER_IDS", "")
WRITE_CROSS_ENCODER = os.environ.get("EMBEDSERVE_WRITE_CROSS_ENCODER", "")
TEST_DATA = os.environ.get("EMBEDSERVE_TEST_DATA", os.path.join(HERE, "..", "data"))
GEMMA_DIR = os.path.join(TEST_DATA, "colpali-reference", "hf")
COLPALI_CONFIG_DIR = os.path.join(TEST_DATA, "colpali-reference", "model")
SPM_REFERENCE = os.path.join(HERE, "..", "tokenizers", "spm_unigram_reference.py")

# The replicas' vocabulary: English words, a-z, 0-9, a little punctuation (see
# server/models/cross_encoder/cross_encoder_random_checkpoint.cc); the rest is unknown there.
# U+0085 (NEL) is whitespace to Rust (char::is_whitespace, regex \s: Unicode White_Space) but
# not to JavaScript's \s and trim(); U+FEFF (BOM) is the other way round (see JS_INPUT).
NEL_TEXT = "nel\u0085between and at the end\u0085"
BOM_TEXT = "bom\ufeffbetween and at the end\ufeff"
NEL_MASK = "a\u0085<mask> b"
BOM_MASK = "a\ufeff<mask> b"
EXT_B_TEXT = "ext-B\U00020000ideograph"  # a CJK ideograph outside the BMP
LONG_PASSAGE = " ".join(["The giant panda is a bear species endemic to China."] * 60)
CORPUS = [
    # ASCII, in and out of the replicas' vocabulary
    "what is a panda?",
    "The giant panda is a bear species endemic to China.",
    "hi",
    "how many people live there",
    "Paris is the capital of France; the city's population is 2,102,650 (2023).",
    "the quick brown fox jumps over the lazy dog",
    "query: passage",
    # case (BERT lower-cases)
    "THE GIANT PANDA",
    "PaNdA BeAr iS Hi",
    # accents (BERT strips them after lower-casing; Unigram keeps them)
    "Café naïve résumé Größe",
    "Ünïcödé Ångström façade",
    "combining: e\u0301 vs \u00e9",
    "İstanbul ΣΟΦΙΑ Ωμέγα",
    "\ufb01ne ligature and \u212b sign",
    # CJK
    "CJK 中文 日本語 한국어",
    "北京是中国的首都",
    "mixed中文text and 漢字か",
    EXT_B_TEXT,
    # emoji
    "emoji 📄🙂 and 👍🏽",
    "family 👨\u200d👩\u200d👧 flag 🇫🇷",
    # Arabic, Hindi
    "مرحبا بالعالم",
    "नमस्ते दुनिया हिन्दी",
    "panda باندا पांडा",
    "مرحبا، كيف حالك؟ ٣ قطط",
    "हिन्दी। ठीक है॥ १२३",
    # whitespace
    "tab\tseparated\tvalues",
    "line one\nline two\n\nline four\n",
    "a  b   c    d",
    "  leading and trailing spaces  ",
    " ",
    "  ",
    "\t\n\r ",
    "carriage\r\nreturn",
    "nbsp\u00a0here and\u3000ideographic space",
    "zero\u200bwidth and\u2028line separator",
    NEL_TEXT,
    BOM_TEXT,
    "\u2581already escaped \u2581\u2581",
    # punctuation runs
    "what?!?! (really...) -- yes!!!",
    "...",
    "a.b,c?d!e",
    "it's the panda's bear",
    "!!!???''--",
    "¿qué? «quoted» “curly” — dash … ellipsis",
    "symbols ~ ` | \\ ^ { } [ ] @ # $ % & * + = < > \" '",
    "price €10 ©2024 ±5° 10×20 §3 ¶ • † ‰",
    "\u212a kelvin, \u1e9e sharp, \u01c4 dz, \uff21\uff22 fullwidth",
    # numbers
    "0123456789",
    "3.14159 and 4,711-2026",
    "½ ² ³ ⅷ ١٢٣ ४२",
    # long words (BERT's max_input_chars_per_word is 100)
    "supercalifragilisticexpialidocious",
    "pandapandapandapandapanda",
    "x" * 99,
    "x" * 100,
    "y" * 101,
    "the " + "q" * 150 + " end",
    LONG_PASSAGE,
    # empty
    "",
    # the unknown-token path
    "ŧħë ŵøřđ",
    "☃☃☃ snow ☃",
    "nul\u0000char",
    "replacement \ufffd char",
    "bell\u0007 escape\u001b del\u007f",
    "soft\u00adhyphen",
    # special tokens in the text
    "<s>query</s>",
    "a <mask> b",
    NEL_MASK,
    BOM_MASK,
    "a<mask>b \t<mask>\n<mask>  ",
    "</s> <s>what</s>",
    "hi[SEP]there [UNK][UNK] [ SEP ]",
    "<pad><pad>x",
    "<unk> unknown",
    "[CLS] hi [SEP]",
    "[cls] hi [sep]",
    "[MASK][PAD]",
    "<bos> text <eos> <image>",
]
PAIRS = [
    ("what is a panda?", "The giant panda is a bear species endemic to China."),
    ("what is a panda?", "hi"),
    ("hi", ""),
    ("", "hi"),
    ("", ""),
    ("THE CAPITAL of France", "Paris is the capital of France."),
    ("中文 query", "emoji 📄 passage"),
    ("  spaced  query  ", "\tpassage\nwith lines\n"),
    ("<s>", "</s>"),
    ("[SEP]", "[CLS]"),
    (LONG_PASSAGE, LONG_PASSAGE),  # 600+ tokens each: compared without truncation
] + list(zip(CORPUS, CORPUS[1:]))
# A pair with an empty B has its A in CORPUS: its expected ids are built from A's (compare()).
assert all(a in CORPUS for a, b in PAIRS if b == "")


# Where tokenizers.js deviates from the Rust `tokenizers` library (the reference transformers
# runs; our side equals it on every input below), tokenizers.js is given an input on which
# Rust's answer and its own agree, or, where there is none (None), the text is not compared
# for that case. Keys: (case, text). Lines cited: the installed @huggingface/tokenizers
# 0.2.0's dist/tokenizers.cjs (with the TypeScript file of huggingface/tokenizers.js it comes
# from), and huggingface/tokenizers (Rust) at 3ba8ad0.
UNIGRAM_CASES = ("xlm-roberta", "spm-unigram-current", "spm-unigram-legacy")
JS_INPUT = {}
# - BertNormalizer's handle_chinese_chars: tokenizers.js walks UTF-16 code units
#   (dist/tokenizers.cjs:822-825, src/core/normalizer/BertNormalizer.ts tokenize_chinese_chars:
#   `text[i]`, `char.charCodeAt(0)`), so an ideograph outside the BMP is never spaced; Rust
#   (tokenizers/src/normalizers/bert.rs, is_chinese_char over chars, 0x20000..=0x2A6DF) puts
#   spaces around it: tokenizers.js gets the spaced text.
JS_INPUT.update({(case, EXT_B_TEXT): "ext-B \U00020000 ideograph"
                 for case in ("bert", "bert-vocab-txt")})
# - An added token's lstrip (<mask>): tokenizers.js trims with String.trimEnd
#   (dist/tokenizers.cjs:3059 and :3090, src/core/Tokenizer.ts encode_text), Rust with the
#   regex `\s*$` (tokenizers/src/tokenizer/added_vocabulary.rs, space_leftmost_at_end): Rust
#   strips a NEL before <mask> (tokenizers.js gets the text without it) and keeps a BOM (not
#   compared).
JS_INPUT.update({(case, NEL_MASK): "a<mask> b" for case in UNIGRAM_CASES})
JS_INPUT.update({(case, BOM_MASK): None for case in UNIGRAM_CASES})
# - The Strip normalizer (today's XLM-R files: strip_right): String.trimEnd
#   (dist/tokenizers.cjs:1057, src/core/normalizer/Strip.ts) against char::is_whitespace
#   (tokenizers/src/tokenizer/normalizer.rs, lrstrip). WhitespaceSplit (the 2020 XLM-R
#   files): `text.match(/\S+/g)` (dist/tokenizers.cjs:777, src/utils/core.ts
#   whitespace_split) against split(char::is_whitespace)
#   (tokenizers/src/pre_tokenizers/whitespace.rs).
JS_INPUT[("spm-unigram-current", NEL_TEXT)] = "nel\u0085between and at the end"
JS_INPUT[("spm-unigram-legacy", NEL_TEXT)] = "nel between and at the end"
JS_INPUT.update({(case, BOM_TEXT): None for case in ("spm-unigram-current", "spm-unigram-legacy")})
# - An empty second text: tokenizers.js drops it (dist/tokenizers.cjs:3113,
#   src/core/Tokenizer.ts tokenize_helper: `this.encode_text(text_pair || null)`, "" being
#   falsy) and applies the single template; Rust encodes EncodeInput::Dual(a, "") with the
#   pair template (tokenizers/src/tokenizer/mod.rs, Tokenizer::encode), and so do the
#   rerankers (FlagEmbedding's compute_score: prepare_for_model(q_ids, []); sentence-
#   transformers: batched pairs). For those pairs the expected ids are the file's pair
#   template around tokenizers.js's ids for A.
PAIR_TEMPLATES = {  # (before A, between A and B, after B), from each tokenizer.json
    "xlm-roberta": ([0], [2, 2], [2]),
    "bert": ([2], [3], [3]),
}


def rust_reference():
    """The Gemma fixture's texts and the ids the Rust `tokenizers` library gave them."""
    with open(os.path.join(GEMMA_DIR, "hf_expected_ids.json"), encoding="utf-8") as f:
        data = json.load(f)
    return data["texts"], data["ids"]


def write_job(job):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(job, f)
    return f.name


def run(argv, what, timeout=60, env=None):
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          env=env)
    assert done.returncode == 0, "%s failed (exit %d):\n%s" % (
        what, done.returncode, done.stderr.decode("utf-8", "replace"))
    return json.loads(done.stdout)


def tokenizers_js(tokenizer_json, config_json, texts, pairs):
    marker = os.path.join(NODE_MODULES, "@huggingface", "tokenizers", "package.json")
    if not NODE_MODULES or not os.path.exists(marker):
        raise RuntimeError("tokenizers.js is not installed at %r: run scripts/install-deps "
                           "(it runs scripts/install-node-clients)" % NODE_MODULES)
    path = write_job({"tokenizer": tokenizer_json, "config": config_json, "texts": texts,
                      "pairs": [list(p) for p in pairs]})
    try:
        return run([NODE, os.path.join(HERE, "tokenizers_js.cjs"), path], "tokenizers_js.cjs",
                   env=dict(os.environ, NODE_PATH=NODE_MODULES))
    finally:
        os.unlink(path)


def ours(args, texts, pairs):
    assert TOKENIZER_IDS and os.path.exists(TOKENIZER_IDS), "tokenizer_ids is not built"
    path = write_job({"texts": texts, "pairs": [list(p) for p in pairs]})
    try:
        return run([TOKENIZER_IDS] + args + [path], "tokenizer_ids")
    finally:
        os.unlink(path)


def without_precompiled(tokenizer):
    """`tokenizer` (a tokenizer.json document) with its Precompiled normalizer steps dropped:
    tokenizers.js does not read the charsmap but approximates it with NFKC and a few
    replacements (src/core/normalizer/Precompiled.ts), so it is no reference there."""
    normalizer = tokenizer["normalizer"]
    if normalizer and normalizer["type"] == "Precompiled":
        tokenizer["normalizer"] = None
    elif normalizer and normalizer["type"] == "Sequence":
        normalizer["normalizers"] = [n for n in normalizer["normalizers"]
                                     if n["type"] != "Precompiled"]
    return tokenizer


@pytest.fixture(scope="module")
def replicas():
    """The directories the cross-encoder cases read, written by our writer and by spm_train."""
    assert WRITE_CROSS_ENCODER and os.path.exists(WRITE_CROSS_ENCODER), \
        "write_random_cross_encoder is not built"
    root = tempfile.mkdtemp(prefix="embedserve-tokjs-")
    dirs = {}
    for kind in ("xlm-roberta", "bert"):
        dirs[kind] = os.path.join(root, kind)
        subprocess.run([WRITE_CROSS_ENCODER, dirs[kind], kind], check=True, timeout=60)
    # The same BERT checkpoint without tokenizer.json: the server reads vocab.txt and
    # tokenizer_config.json instead.
    dirs["bert-vocab-txt"] = os.path.join(root, "bert-vocab-txt")
    shutil.copytree(dirs["bert"], dirs["bert-vocab-txt"])
    os.unlink(os.path.join(dirs["bert-vocab-txt"], "tokenizer.json"))
    # A Unigram vocabulary with real subword pieces and scores: the nmt_nfkc model that
    # spm_train trains in tests/tokenizers/spm_unigram_reference.py, as XLM-R tokenizer.json
    # files (today's Metaspace with prepend_scheme, and the 2020 WhitespaceSplit + Metaspace
    # with add_prefix_space), beside the XLM-R replica's config.json.
    spm = os.path.join(root, "spm")
    subprocess.run([sys.executable, SPM_REFERENCE, spm], check=True, timeout=60)
    with open(os.path.join(dirs["xlm-roberta"], "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    for style in ("current", "legacy"):
        with open(os.path.join(spm, "xlmr_%s_tokenizer.json" % style), encoding="utf-8") as f:
            tokenizer = without_precompiled(json.load(f))
        name = "spm-unigram-" + style
        dirs[name] = os.path.join(root, name)
        os.makedirs(dirs[name])
        with open(os.path.join(dirs[name], "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer, f, ensure_ascii=False)
        with open(os.path.join(dirs[name], "config.json"), "w", encoding="utf-8") as f:
            json.dump(dict(config, vocab_size=len(tokenizer["model"]["vocab"])), f)
    yield dirs
    shutil.rmtree(root)


def describe(text):
    shown = repr(text)
    return shown if len(shown) <= 70 else shown[:67] + "..."


def shorten(values):
    """A list as a message shows it: whole when short, else its ends."""
    if not isinstance(values, list) or len(values) <= 24:
        return str(values)
    return "%s ... %s (%d)" % (str(values[:12])[:-1], str(values[-8:])[1:], len(values))


def difference(what, mine, mine_types, theirs):
    """A line naming the first difference, or None. `theirs`: tokenizers.js's answer; type ids
    are compared where `mine_types` is not None."""
    if "error" in theirs:
        return "%s: tokenizers.js failed: %s" % (what, theirs["error"].splitlines()[0])
    if mine == theirs["ids"] and (mine_types is None or mine_types == theirs.get("type_ids")):
        return None
    at = next((i for i, (x, y) in enumerate(zip(mine or [], theirs["ids"])) if x != y),
              min(len(mine or []), len(theirs["ids"])))
    return "%s: ours %s types %s, tokenizers.js %s types %s (first difference at %d; tokens %s)" % (
        what, shorten(mine), shorten(mine_types), shorten(theirs["ids"]),
        shorten(theirs.get("type_ids")), at, shorten(theirs.get("tokens")))


def js_input(case, text):
    """What tokenizers.js is given for `text` in `case` (None: not compared; see JS_INPUT)."""
    return JS_INPUT.get((case, text), text)


def compare(family, texts, pairs, mine, theirs, templates=True):
    """Every difference, as lines; empty when all ids (and templates) agree. Type ids are
    compared for BERT only: XLM-R has one token type and the server sends none (all 0)."""
    problems = []
    assert len(mine["encode"]) == len(theirs["encode"]) == len(texts)
    for text, a, b in zip(texts, mine["encode"], theirs["encode"]):
        problems.append(difference("%s encode %s" % (family, describe(text)), a, None, b))
    if templates:
        bert = family == "bert"
        for text, a, types, b in zip(texts, mine["single"], mine["single_types"],
                                     theirs["single"]):
            problems.append(difference("%s single %s" % (family, describe(text)), a,
                                       types if bert else None, b))
        assert len(mine["pair"]) == len(theirs["pair"]) == len(pairs)
        encoded = dict(zip(texts, theirs["encode"]))
        for (qa, qb), a, types, b in zip(pairs, mine["pair"], mine["pair_types"], theirs["pair"]):
            if qb == "":  # tokenizers.js drops an empty B (see PAIR_TEMPLATES)
                before, middle, after = PAIR_TEMPLATES[family]
                first = before + encoded[qa]["ids"] + middle
                b = {"ids": first + after, "type_ids": [0] * len(first) + [1] * len(after)}
            problems.append(difference("%s pair (%s, %s)" % (family, describe(qa), describe(qb)),
                                       a, types if bert else None, b))
    return [p for p in problems if p]


def spm_texts():
    """The texts spm_unigram_reference.py encodes with the real sentencepiece library."""
    sys.path.insert(0, os.path.dirname(SPM_REFERENCE))
    try:
        import spm_unigram_reference
    finally:
        sys.path.pop(0)
    return spm_unigram_reference.TEXTS


# (case: the directory our side loads, the directory tokenizers.js reads, family, unknown id)
CROSS_ENCODER_CASES = [
    ("xlm-roberta", "xlm-roberta", "xlm-roberta", 3),
    ("bert", "bert", "bert", 1),
    ("bert-vocab-txt", "bert", "bert", 1),
    ("spm-unigram-current", "spm-unigram-current", "xlm-roberta", 3),
    ("spm-unigram-legacy", "spm-unigram-legacy", "xlm-roberta", 3),
]


@pytest.mark.parametrize("case,js_dir,family,unk", CROSS_ENCODER_CASES,
                         ids=[c[0] for c in CROSS_ENCODER_CASES])
def test_cross_encoder_tokenizers_equal_tokenizers_js(replicas, case, js_dir, family, unk):
    texts = CORPUS + ([t for t in spm_texts() if t not in CORPUS]
                      if case.startswith("spm-") else [])
    texts = [t for t in texts if js_input(case, t) is not None]
    pairs = [(a, b) for a, b in PAIRS
             if js_input(case, a) is not None and js_input(case, b) is not None]
    mine = ours(["cross-encoder", replicas[case]], texts, pairs)
    assert mine["source"] == ("vocab.txt" if case == "bert-vocab-txt" else "tokenizer.json")
    config = os.path.join(replicas[js_dir], "tokenizer_config.json")
    theirs = tokenizers_js(os.path.join(replicas[js_dir], "tokenizer.json"),
                           config if os.path.exists(config) else None,
                           [js_input(case, t) for t in texts],
                           [(js_input(case, a), js_input(case, b)) for a, b in pairs])
    problems = compare(family, texts, pairs, mine, theirs)
    assert not problems, "%s: %d differences:\n%s" % (case, len(problems),
                                                      "\n".join(problems[:40]))
    # The corpus reaches the paths it is meant to: unknown characters, and the pair template
    # around a query and a passage (the template read by hand from the tokenizer.json).
    assert any(unk in ids for ids in mine["encode"])
    before, middle, after = PAIR_TEMPLATES[family]
    query = mine["encode"][texts.index("what is a panda?")]
    passage = mine["encode"][texts.index("The giant panda is a bear species endemic to China.")]
    assert mine["pair"][0] == before + query + middle + passage + after


def test_gemma_bpe_equals_tokenizers_js_and_the_rust_library():
    rust_texts, rust_ids = rust_reference()
    texts = CORPUS + [t for t in rust_texts if t not in CORPUS]
    assert not any(case == "gemma" for case, _ in JS_INPUT)
    mine = ours(["colpali", GEMMA_DIR, COLPALI_CONFIG_DIR], texts, [])
    assert mine["source"] == "tokenizer.json"
    # Gemma's file has no tokenizer_config.json here; its template is `$A` (ColPali's prompts
    # add <bos> themselves), so only the ids without special tokens are compared.
    theirs = tokenizers_js(os.path.join(GEMMA_DIR, "tokenizer.json"), None, texts, [])
    problems = compare("gemma", texts, [], mine, theirs, templates=False)
    # tokenizers.js is a faithful reference for this file: it gives the Rust library's ids.
    for text, ids in zip(rust_texts, rust_ids):
        js = theirs["encode"][texts.index(text)].get("ids")
        if js != ids:
            problems.append("gemma: tokenizers.js %s on %s, the Rust library %s" % (
                shorten(js), describe(text), shorten(ids)))
    assert not problems, "%d differences:\n%s" % (len(problems), "\n".join(problems[:40]))
    # Byte fallback is reached (<0xXX> pieces are ids 6..261 in this vocabulary).
    assert any(any(6 <= i <= 261 for i in ids) for ids in mine["encode"])
