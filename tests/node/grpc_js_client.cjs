// A second, independent gRPC client: @grpc/grpc-js with the .proto files loaded at run time by
// @grpc/proto-loader (no generated code). Calls Embed, EmbedStream and grpc.health.v1 on one
// target and prints what it got as JSON for tests/node/test_grpc_js.py to compare.
//
// Usage: node grpc_js_client.cjs JOB.json   (JOB: target, proto_dir, health_proto, model,
// texts, images (file paths), token (optional), wrong_token (optional: then only the right,
// the wrong and no token are tried on Embed)); the result is printed.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const LOAD_OPTIONS = {
  keepCase: true,      // field names as the .proto spells them
  longs: Number,       // Tensor.shape is int64
  enums: String,       // "DTYPE_FLOAT16", "SERVING"
  bytes: Buffer,
  defaults: true,      // absent repeated fields read as []
  oneofs: true,
};

// A float32 from IEEE 754 half-precision bits, written from the format's definition:
// 1 sign bit, 5 exponent bits (bias 15), 10 fraction bits; exponent 0 is subnormal, 31 is
// infinity or NaN.
function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * Math.pow(2, -24);
  if (exponent === 31) return fraction === 0 ? sign * Infinity : NaN;
  return sign * (1 + fraction / 1024) * Math.pow(2, exponent - 15);
}

// bfloat16 is the high half of a float32: widen by shifting into the top 16 bits.
function bfloat16ToFloat(bits) {
  const word = Buffer.alloc(4);
  word.writeUInt32LE((bits << 16) >>> 0, 0);
  return word.readFloatLE(0);
}

// An embedserve.v1.Tensor as {shape, dtype, encoding, values (flat, row-major)}, read the way
// types.proto documents it: `values` (float32) or `data` (little-endian `dtype`).
function decodeTensor(tensor) {
  const shape = tensor.shape.map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const dtype = tensor.dtype === "DTYPE_UNSPECIFIED" ? "DTYPE_FLOAT32" : tensor.dtype;
  const data = tensor.data;
  let values;
  let encoding;
  if (data.length > 0) {
    encoding = "packed";
    const width = dtype === "DTYPE_FLOAT32" ? 4 : 2;
    if (data.length !== count * width) {
      throw new Error(`Tensor.data has ${data.length} bytes, shape ${shape} in ${dtype} needs ${count * width}`);
    }
    values = [];
    for (let i = 0; i < count; i++) {
      if (dtype === "DTYPE_FLOAT32") values.push(data.readFloatLE(4 * i));
      else if (dtype === "DTYPE_FLOAT16") values.push(halfToFloat(data.readUInt16LE(2 * i)));
      else if (dtype === "DTYPE_BFLOAT16") values.push(bfloat16ToFloat(data.readUInt16LE(2 * i)));
      else throw new Error(`unknown Tensor.dtype ${tensor.dtype}`);
    }
  } else {
    encoding = "values";
    values = Array.from(tensor.values);
    if (values.length !== count) {
      throw new Error(`Tensor.values has ${values.length} numbers, shape ${shape} needs ${count}`);
    }
  }
  return { shape, dtype, encoding, values };
}

function embeddingsOf(list) {
  return list.map((e) => ({ ...decodeTensor(e.vector), truncated: e.truncated, token_count: e.token_count }));
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 20000);
    client[method](request, metadata, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

// The outcome of a call: {ok: response} or {code, details} of its gRPC error.
async function outcome(promise) {
  try {
    return { ok: await promise };
  } catch (error) {
    if (typeof error.code !== "number") throw error;
    return { code: error.code, code_name: grpc.status[error.code], details: error.details };
  }
}

// Writes every request, then half-closes; resolves with the responses in arrival order.
function bidiStream(client, requests, metadata) {
  return new Promise((resolve, reject) => {
    const call = client.EmbedStream(metadata, { deadline: new Date(Date.now() + 20000) });
    const responses = [];
    call.on("data", (response) => responses.push(response));
    call.on("error", reject);
    call.on("end", () => resolve(responses));
    for (const request of requests) call.write(request);
    call.end();
  });
}

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const definition = protoLoader.loadSync(
    ["embedserve/v1/embed.proto", "embedserve/v1/models.proto"],
    { ...LOAD_OPTIONS, includeDirs: [job.proto_dir] });
  const health = protoLoader.loadSync(path.basename(job.health_proto),
    { ...LOAD_OPTIONS, includeDirs: [path.dirname(job.health_proto)] });
  const v1 = grpc.loadPackageDefinition(definition).embedserve.v1;
  const healthV1 = grpc.loadPackageDefinition(health).grpc.health.v1;

  const credentials = grpc.credentials.createInsecure();
  const embed = new v1.EmbedService(job.target, credentials);
  const models = new v1.ModelService(job.target, credentials);
  const healthClient = new healthV1.Health(job.target, credentials);
  const metadata = new grpc.Metadata();
  if (job.token) metadata.set("authorization", `Bearer ${job.token}`);

  const texts = job.texts.map((text) => ({ text }));
  const images = job.images.map((file) => ({ image: fs.readFileSync(file) }));
  const request = (inputs, options) => ({ model: job.model, inputs, options });
  const packed = (dtype) => ({ encoding: "ENCODING_PACKED", dtype });
  const result = { target: job.target };

  // Health: the server as a whole, the service, the model; an unknown name is NOT_FOUND.
  result.health = {};
  for (const service of ["", "embedserve.v1.EmbedService", job.model]) {
    result.health[service] = (await unary(healthClient, "Check", { service }, new grpc.Metadata())).status;
  }
  result.health_unknown = await outcome(unary(healthClient, "Check", { service: "no-such-service" }, new grpc.Metadata()));

  // With the bearer-token job: the right, a wrong and no token on one Embed, nothing else.
  if (job.wrong_token) {
    result.texts_float_list = embeddingsOf((await unary(embed, "Embed", request(texts, undefined), metadata)).embeddings);
    const wrong = new grpc.Metadata();
    wrong.set("authorization", `Bearer ${job.wrong_token}`);
    result.wrong_token = await outcome(unary(embed, "Embed", request(texts, undefined), wrong));
    result.no_token = await outcome(unary(embed, "Embed", request(texts, undefined), new grpc.Metadata()));
    return finish();
  }

  result.models = (await unary(models, "ListModels", {}, metadata)).models.map((m) => ({ name: m.name, state: m.state }));

  // Embed, in each wire encoding.
  const embedCall = async (inputs, options) => embeddingsOf((await unary(embed, "Embed", request(inputs, options), metadata)).embeddings);
  result.texts_float_list = await embedCall(texts, { encoding: "ENCODING_FLOAT_LIST" });
  result.texts_default = await embedCall(texts, undefined);
  result.texts_packed_float32 = await embedCall(texts, packed("DTYPE_FLOAT32"));
  result.texts_packed_float16 = await embedCall(texts, packed("DTYPE_FLOAT16"));
  result.texts_packed_bfloat16 = await embedCall(texts, packed("DTYPE_BFLOAT16"));
  result.images_packed_float32 = await embedCall(images, packed("DTYPE_FLOAT32"));
  result.mixed_float_list = await embedCall([texts[0], images[0]], { encoding: "ENCODING_FLOAT_LIST" });

  // Errors come back as gRPC statuses.
  result.unknown_model = await outcome(unary(embed, "Embed", { model: "no-such-model", inputs: texts }, metadata));
  result.no_inputs = await outcome(unary(embed, "Embed", { model: job.model, inputs: [] }, metadata));

  // EmbedStream: one response per request, in order, ids echoed; a bad message is answered
  // with `error` and the stream goes on.
  const streamRequests = [
    { id: "texts", model: job.model, inputs: texts, options: packed("DTYPE_FLOAT32") },
    { id: "bad", model: "no-such-model", inputs: texts.slice(0, 1) },
    { id: "images", model: job.model, inputs: images, options: { encoding: "ENCODING_FLOAT_LIST" } },
  ];
  for (let i = 0; i < texts.length; i++) {
    streamRequests.push({ id: `text-${i}`, model: job.model, inputs: [texts[i]] });
  }
  result.stream = (await bidiStream(embed, streamRequests, metadata)).map((r) => ({
    id: r.id,
    error: r.error ? { code: r.error.code, message: r.error.message } : null,
    embeddings: embeddingsOf(r.embeddings),
  }));

  return finish();

  function finish() {
    embed.close();
    models.close();
    healthClient.close();
    process.stdout.write(JSON.stringify(result));
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
