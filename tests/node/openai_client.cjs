// The official `openai` Node client against embedserve's OpenAI-shaped HTTP API: embeddings
// in float, base64 and the client's own default (it asks for base64 and decodes it), text and
// image (modality extension) inputs, models.list, and its typed errors. Prints what it got
// as JSON for tests/node/test_openai_http.py to compare with the Python client's gRPC results.
//
// Usage: node openai_client.cjs JOB.json   (JOB: base_url, api_key, model, dim, texts,
// image_data_urls, auth_only (optional: then only the key checks run, with wrong_key)).
"use strict";

const fs = require("fs");
const OpenAI = require("openai");

// Every request the client sends, as it left (method, path, Authorization, JSON body).
const sent = [];
async function recordingFetch(url, init) {
  const body = init && typeof init.body === "string" ? JSON.parse(init.body) : null;
  const headers = new Headers(init && init.headers);
  sent.push({ method: init && init.method, path: new URL(url).pathname,
              authorization: headers.get("authorization"), body });
  return fetch(url, init);
}

function client(job, apiKey) {
  return new OpenAI({ baseURL: job.base_url, apiKey, fetch: recordingFetch, maxRetries: 0, timeout: 20000 });
}

// The outcome of a call: {ok} or the typed error's class, status and error body.
async function outcome(promise) {
  try {
    return { ok: await promise };
  } catch (error) {
    if (!(error instanceof OpenAI.APIError)) throw error;
    return { error_class: error.constructor.name, status: error.status, error: error.error,
             is_not_found: error instanceof OpenAI.NotFoundError,
             is_bad_request: error instanceof OpenAI.BadRequestError,
             is_authentication: error instanceof OpenAI.AuthenticationError };
  }
}

// A response with each embedding as a plain array, or left as the base64 string the server
// sent; embedding_type says which of the two the client handed back.
function plain(response) {
  return { ...response, data: response.data.map((item) => ({
    ...item, embedding: typeof item.embedding === "string" ? item.embedding : Array.from(item.embedding),
    embedding_type: typeof item.embedding === "string" ? "string" : item.embedding.constructor.name })) };
}

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const result = {};
  const openai = client(job, job.api_key);
  const create = async (body) => plain(await openai.embeddings.create(body));

  if (job.auth_only) {
    result.right_key = await create({ model: job.model, input: job.texts, encoding_format: "float" });
    result.wrong_key = await outcome(client(job, job.wrong_key).embeddings.create({ model: job.model, input: job.texts }));
    result.sent = sent;
    process.stdout.write(JSON.stringify(result));
    return;
  }

  result.float = await create({ model: job.model, input: job.texts, encoding_format: "float" });
  result.base64 = await create({ model: job.model, input: job.texts, encoding_format: "base64" });
  result.default = await create({ model: job.model, input: job.texts });
  result.single = await create({ model: job.model, input: job.texts[0], encoding_format: "float" });
  result.own_dimensions = await create({ model: job.model, input: job.texts, dimensions: job.dim });
  // `modality` is embedserve's extension (Infinity's convention): the client passes it through.
  result.images = await create({ model: job.model, input: job.image_data_urls, modality: "image",
                                 encoding_format: "float" });
  result.models = (await openai.models.list()).data;

  result.unknown_model = await outcome(openai.embeddings.create({ model: "no-such-model", input: job.texts }));
  result.other_dimensions = await outcome(openai.embeddings.create({ model: job.model, input: job.texts,
                                                                     dimensions: job.dim / 2 }));
  result.remote_image = await outcome(openai.embeddings.create({
    model: job.model, input: ["https://example.com/dog.jpg"], modality: "image" }));
  result.sent = sent;
  process.stdout.write(JSON.stringify(result));
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
