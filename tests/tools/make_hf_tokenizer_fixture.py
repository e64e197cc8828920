#!/usr/bin/env python3
# Makes the [hf_fixture] data of tests/models/colpali_tokenizer_json_test.cc: the reference
# tokenizer.model converted to tokenizer.json by transformers, and the ids `tokenizers` gives.
"""Convert a Gemma SentencePiece tokenizer.model into a Hugging Face tokenizer.json with
transformers' own conversion code, and record the ids the `tokenizers` library gives for a
varied list of texts (add_special_tokens=False).

Run where transformers (4.x or 5.x), tokenizers, sentencepiece and protobuf are installed:

    python3 tests/tools/make_hf_tokenizer_fixture.py \
        --model tests/data/colpali-reference/model/tokenizer.model \
        --out tests/data/colpali-reference/hf

Writes OUT/tokenizer.json and OUT/hf_expected_ids.json:

    {"generator": ..., "route": ..., "versions": {...}, "model_sha256": ...,
     "texts": [str, ...], "ids": [[int, ...], ...],
     "transformers_ids_differ": [index, ...]}

`ids[i]` is tokenizers.Tokenizer.from_file(OUT/tokenizer.json).encode(texts[i],
add_special_tokens=False).ids. `transformers_ids_differ` lists the texts where the
transformers tokenizer object itself (before saving) gave other ids (expected empty).
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import traceback

TEXTS = [
    "",
    "Describe the image.\n",
    "\n",
    "Question: Which page shows the quarterly revenue table?",
    "Which page shows the quarterly revenue table?",
    "signature",
    "Umsatz drittes Quartal",
    "What is 2 + 2?",
    "Invoice 4711: due date and amount",
    "Quest Question Questions revenue venue the them these",
    "The quick brown fox jumps over the lazy dog.",
    # spaces
    " ",
    "  ",
    " x",
    "x ",
    "a  b   c    d",
    "  leading and trailing spaces  ",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    # other whitespace
    "line one\nline two\n\nline four\n",
    "tab\tseparated\tvalues",
    "\t\t x\t",
    "carriage\r\nreturn",
    "nbsp\u00a0here and\u3000ideographic space",
    "zero\u200bwidth",
    # beyond ASCII (byte fallback where the tiny vocabulary lacks the character)
    "émoji 📄 and ünïcödé",
    "emoji 📄🙂 and 👍🏽",
    "CJK 中文 日本語 한국어",
    "accents: é è ê ë ü ö ñ ç Å",
    "combining: e\u0301 vs \u00e9",
    "digits 0123456789 and 4711-2026, 3.14",
    "symbols ~ ` | \\ ^ { } [ ] @ # $ % & * + = < > \" '",
    "nul\u0000char",
    "\u2581already escaped \u2581\u2581",
    # special and added tokens inside text
    "<bos>",
    "a<bos>b",
    "text <pad> with <eos> specials <image> inside",
    "<image><image>x",
    "Question: <image>",
    "<unk> unknown",
    "<bos<eos>>",
    "< bos > <BOS> <bos",
    "x\ny\n",
    "the " * 30,
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def versions():
    out = {"python": sys.version.split()[0]}
    for name in ("transformers", "tokenizers", "sentencepiece", "google.protobuf"):
        try:
            module = __import__(name, fromlist=["__version__"])
            out[name] = getattr(module, "__version__", "?")
        except Exception as e:  # noqa: BLE001 - report whatever is missing
            out[name] = "missing (%s)" % e
    return out


def backend_of(tok):
    """The tokenizers.Tokenizer inside a transformers tokenizer."""
    for attr in ("backend_tokenizer", "_tokenizer"):
        backend = getattr(tok, attr, None)
        if backend is not None:
            return backend
    raise RuntimeError("no backend tokenizer on %r" % type(tok))


def route_v5_from_pretrained(model_path, work):
    # transformers 5.x: GemmaTokenizer is the fast tokenizer; given a directory holding only
    # tokenizer.model it converts it (SentencePieceExtractor -> vocab, merges, added tokens).
    # The tiny vocabulary has no <mask> piece (real Gemma's is id 4), so mask_token=None keeps
    # transformers from appending one past the vocabulary.
    import transformers

    d = os.path.join(work, "v5")
    os.makedirs(d)
    shutil.copy(model_path, os.path.join(d, "tokenizer.model"))
    tok = transformers.GemmaTokenizer.from_pretrained(d, mask_token=None)
    return tok


def route_v5_native(model_path, work):
    # transformers 5.x, the same conversion called directly: convert_to_native_format reads
    # tokenizer.model (vocab, merges, control/user-defined pieces as added tokens).
    import transformers

    cls = transformers.GemmaTokenizer
    kwargs = cls.convert_to_native_format(vocab_file=model_path)
    kwargs["mask_token"] = None
    return cls(**kwargs)


def route_v4_fast_from_slow(model_path, work):
    # transformers 4.x: GemmaTokenizerFast converts the slow (sentencepiece) tokenizer with
    # convert_slow_tokenizer.GemmaConverter.
    import transformers

    return transformers.GemmaTokenizerFast(vocab_file=model_path, from_slow=True)


def route_converter(model_path, work):
    # The converter alone, over a stand-in for the slow tokenizer, wrapped so that transformers
    # registers the special tokens as a saved checkpoint has them.
    import types

    import transformers
    from transformers.convert_slow_tokenizer import GemmaConverter

    shim = types.SimpleNamespace(
        vocab_file=model_path,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        add_prefix_space=False,
    )
    backend = GemmaConverter(shim).converted()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


ROUTES = [
    ("transformers.GemmaTokenizer.from_pretrained(dir with tokenizer.model, mask_token=None)", route_v5_from_pretrained),
    ("transformers.GemmaTokenizer.convert_to_native_format(vocab_file=...)", route_v5_native),
    ("transformers.GemmaTokenizerFast(vocab_file=..., from_slow=True)", route_v4_fast_from_slow),
    ("transformers.convert_slow_tokenizer.GemmaConverter + PreTrainedTokenizerFast", route_converter),
]


def check(tok, model_path):
    """Raises unless the converted tokenizer holds every SentencePiece piece at its id."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor()
    sp.Load(model_path)
    backend = backend_of(tok)
    n = sp.GetPieceSize()
    size = backend.get_vocab_size(with_added_tokens=True)
    if size != n:
        raise RuntimeError("converted vocabulary has %d ids, tokenizer.model has %d pieces" % (size, n))
    for i in range(n):
        piece = sp.IdToPiece(i)
        got = backend.id_to_token(i)
        # GemmaConverter names the <0x09> piece "\t" when the vocabulary has no tab piece.
        if got != piece and not (piece == "<0x09>" and got == "\t"):
            raise RuntimeError("id %d is %r in the conversion, %r in tokenizer.model" % (i, got, piece))
    model = json.loads(backend.to_str())["model"]
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise RuntimeError("not a byte-fallback BPE: %r" % {k: model.get(k) for k in ("type", "byte_fallback")})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="path to the SentencePiece tokenizer.model")
    parser.add_argument("--out", required=True, help="output directory (tokenizer.json, hf_expected_ids.json)")
    args = parser.parse_args()

    info = versions()
    print("versions:", json.dumps(info))
    import tokenizers

    tok, route = None, None
    with tempfile.TemporaryDirectory() as work:
        for name, build in ROUTES:
            try:
                candidate = build(args.model, work)
                check(candidate, args.model)
                tok, route = candidate, name
                break
            except Exception:  # noqa: BLE001 - try the next route, say why this one failed
                print("route failed: %s\n%s" % (name, traceback.format_exc()), file=sys.stderr)
    if tok is None:
        sys.exit("no conversion route worked (see above)")
    print("route:", route)

    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "tokenizer.json")
    backend_of(tok).save(json_path)
    print("wrote", json_path)
    for key in ("normalizer", "pre_tokenizer"):
        print(key + ":", json.dumps(json.load(open(json_path, encoding="utf-8"))[key]))

    reloaded = tokenizers.Tokenizer.from_file(json_path)
    ids, differ = [], []
    for i, text in enumerate(TEXTS):
        from_file = reloaded.encode(text, add_special_tokens=False).ids
        direct = tok(text, add_special_tokens=False)["input_ids"]
        if list(direct) != list(from_file):
            differ.append(i)
            print("WARNING: text %d %r: tokenizer object %s, reloaded tokenizer.json %s" % (i, text, direct, from_file))
        ids.append(from_file)
        print("%3d %r -> %s" % (i, text, from_file))

    out = {
        "generator": "tests/tools/make_hf_tokenizer_fixture.py",
        "route": route,
        "versions": info,
        "model_sha256": sha256(args.model),
        "texts": TEXTS,
        "ids": ids,
        "transformers_ids_differ": differ,
    }
    ids_path = os.path.join(args.out, "hf_expected_ids.json")
    with open(ids_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", ids_path, "(%d texts)" % len(TEXTS))


if __name__ == "__main__":
    main()
