// Hugging Face's tokenizers.js (@huggingface/tokenizers) over one tokenizer.json: the ids of
// each text without and with the file's special-token template, and of each (A, B) pair with
// it. Usage: node tokenizers_js.cjs JOB.json, where JOB is
//   {"tokenizer": path of tokenizer.json, "config": path of tokenizer_config.json or null,
//    "texts": [str, ...], "pairs": [[str, str], ...]}
// Prints {"encode": [{"ids", "tokens"} or {"error"}], "single": [{"ids", "type_ids"}],
//         "pair": [{"ids", "type_ids"}]} (no truncation, no padding: tokenizers.js has none).
"use strict";
const fs = require("fs");
const { Tokenizer } = require("@huggingface/tokenizers");

function readJson(path) {
  return JSON.parse(fs.readFileSync(path, "utf8"));
}

function attempt(fn) {
  try {
    return fn();
  } catch (e) {
    return { error: String(e && e.stack ? e.stack : e) };
  }
}

const job = readJson(process.argv[2]);
const tokenizer = new Tokenizer(readJson(job.tokenizer), job.config ? readJson(job.config) : {});

const out = { encode: [], single: [], pair: [] };
for (const text of job.texts) {
  out.encode.push(attempt(() => {
    const e = tokenizer.encode(text, { add_special_tokens: false });
    return { ids: e.ids, tokens: e.tokens };
  }));
  out.single.push(attempt(() => {
    const e = tokenizer.encode(text, { add_special_tokens: true, return_token_type_ids: true });
    return { ids: e.ids, type_ids: e.token_type_ids ?? null };
  }));
}
for (const [a, b] of job.pairs ?? []) {
  out.pair.push(attempt(() => {
    const e = tokenizer.encode(a, {
      text_pair: b,
      add_special_tokens: true,
      return_token_type_ids: true,
    });
    return { ids: e.ids, type_ids: e.token_type_ids ?? null };
  }));
}
process.stdout.write(JSON.stringify(out) + "\n");
