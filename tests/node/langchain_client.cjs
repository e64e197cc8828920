// LangChain's OpenAIEmbeddings (@langchain/openai) pointed at embedserve's OpenAI-shaped HTTP
// API: embedQuery and embedDocuments (batched, the client's default base64 and explicit
// float), and a wrong key. Prints the vectors as JSON for tests/node/test_langchain_http.py.
//
// Usage: node langchain_client.cjs JOB.json   (JOB: base_url, api_key, model, dim, query,
// documents, batch_size, wrong_key (optional: then only the key checks run)).
"use strict";

const fs = require("fs");
const { OpenAIEmbeddings } = require("@langchain/openai");

function embedder(job, apiKey, extra) {
  return new OpenAIEmbeddings({ model: job.model, apiKey, maxRetries: 0, timeout: 20000,
                                configuration: { baseURL: job.base_url }, ...extra });
}

const rows = (vectors) => vectors.map((v) => Array.from(v));

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const result = {};
  const embeddings = embedder(job, job.api_key, {});

  if (job.wrong_key) {
    result.right_key = Array.from(await embeddings.embedQuery(job.query));
    try {
      await embedder(job, job.wrong_key, {}).embedQuery(job.query);
      result.wrong_key = { ok: true };
    } catch (error) {
      result.wrong_key = { status: error.status, name: error.name, message: String(error.message) };
    }
    process.stdout.write(JSON.stringify(result));
    return;
  }

  result.query = Array.from(await embeddings.embedQuery(job.query));
  // Several requests of batch_size documents each, sent concurrently, put back in order.
  result.documents = rows(await embedder(job, job.api_key, { batchSize: job.batch_size })
    .embedDocuments(job.documents));
  result.documents_float = rows(await embedder(job, job.api_key, { encodingFormat: "float" })
    .embedDocuments(job.documents));
  result.documents_dimensions = rows(await embedder(job, job.api_key, { dimensions: job.dim })
    .embedDocuments(job.documents));
  process.stdout.write(JSON.stringify(result));
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
