#!/usr/bin/env bash
# The README's grpcurl-style recipes, run with `buf curl` and no proto files: reflection
# lists the services, Health/Check and ModelService answer over the unix socket and TCP,
# and `buf lint` passes on proto/.
# With a cross-encoder writer, the README's cross-encoder Rerank recipe too.
# Usage: buf_test.sh BUF SERVER_BINARY PROTO_DIR [MODEL_SPEC [CROSS_ENCODER_WRITER]]
set -euo pipefail
buf="$1"; server="$2"; proto="$3"; model="${4:-}"; writer="${5:-}"
if [ ! -x "$buf" ]; then echo "buf not found at $buf: run scripts/install-deps"; exit 1; fi

(cd "$proto" && "$buf" lint)
echo "ok: buf lint"

# Breaking-change check of the v1 API against the previous commit on this branch (the
# previous main once this lands), read straight from git.
repo="$(cd "$proto/.." && pwd)"
if git -C "$repo" rev-parse --verify -q HEAD~1 >/dev/null; then
  (cd "$proto" && "$buf" breaking --against "$repo/.git#ref=HEAD~1,subdir=proto")
  echo "ok: buf breaking against HEAD~1"
else
  echo "buf breaking needs the previous commit: clone with history (not --depth 1)"; exit 1
fi

dir="$(mktemp -d)"
sock="$dir/s.sock"
port="$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
args=(--listen "unix:$sock" --listen "127.0.0.1:$port" --log-level warning)
[ -n "$model" ] && args+=(--model "$model")
if [ -n "$writer" ]; then
  "$writer" "$dir/bge" xlm-roberta
  args+=(--model "bge=$dir/bge")
fi
"$server" "${args[@]}" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT

unix=(--protocol grpc --http2-prior-knowledge --unix-socket "$sock")
for _ in $(seq 1 300); do
  if "$buf" curl "${unix[@]}" http://localhost/grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"'; then break; fi
  sleep 0.1
done

methods="$("$buf" curl "${unix[@]}" --list-methods http://localhost)"
for m in grpc.health.v1.Health/Check embedserve.v1.EmbedService/Embed \
         embedserve.v1.EmbedService/EmbedStream embedserve.v1.EmbedService/Rerank \
         embedserve.v1.EmbedService/Classify embedserve.v1.EmbedService/Tokenize \
         embedserve.v1.ModelService/ListModels; do
  grep -qx "$m" <<<"$methods" || { echo "missing from --list-methods: $m"; echo "$methods"; exit 1; }
done
echo "ok: --list-methods over the unix socket"

for target in unix tcp; do
  if [ $target = unix ]; then opts=("${unix[@]}"); base=http://localhost;
  else opts=(--protocol grpc --http2-prior-knowledge); base="http://127.0.0.1:$port"; fi
  out="$("$buf" curl "${opts[@]}" "$base/grpc.health.v1.Health/Check")"
  grep -q '"status": "SERVING"' <<<"$out" || { echo "health over $target: $out"; exit 1; }
  out="$("$buf" curl "${opts[@]}" "$base/embedserve.v1.ModelService/ListModels")"
  grep -q '"models"\|{}' <<<"$out" || { echo "ListModels over $target: $out"; exit 1; }
  # An error status comes back as JSON with its code.
  if out="$("$buf" curl "${opts[@]}" -d '{"model":"nope","inputs":[{"text":"a"}]}' "$base/embedserve.v1.EmbedService/Embed" 2>&1)"; then
    echo "Embed to an unknown model succeeded over $target: $out"; exit 1
  fi
  grep -q '"not_found"' <<<"$out" || { echo "expected not_found over $target: $out"; exit 1; }
  echo "ok: health, ListModels and a NOT_FOUND over $target"
done

if [ -n "$model" ]; then
  name="${model%%=*}"
  out="$("$buf" curl "${unix[@]}" -d "{\"model\":\"$name\",\"inputs\":[{\"text\":\"a photo of a dog\"}]}" http://localhost/embedserve.v1.EmbedService/Embed)"
  grep -q '"values"' <<<"$out" || { echo "Embed JSON has no values: $out"; exit 1; }
  echo "ok: Embed as JSON with a float list"
  out="$("$buf" curl --protocol grpc --http2-prior-knowledge -d "{\"model\":\"$name\",\"query\":{\"text\":\"a dog\"},\"candidates\":[{\"text\":\"a cat\"},{\"text\":\"a dog\"}]}" "http://127.0.0.1:$port/embedserve.v1.EmbedService/Rerank")"
  grep -q '"results"' <<<"$out" || { echo "Rerank JSON: $out"; exit 1; }
  echo "ok: Rerank as JSON over TCP"
fi

if [ -n "$writer" ]; then
  # The README's recipe, as written there (port substituted).
  out="$("$buf" curl --protocol grpc --http2-prior-knowledge \
    -d '{"model":"bge","query":{"text":"what is a panda?"},"candidates":[{"text":"hi"},{"text":"The giant panda is a bear."}],"sigmoid":true}' \
    "http://127.0.0.1:$port/embedserve.v1.EmbedService/Rerank")"
  grep -q '"scoring": "cross_encoder"' <<<"$out" || { echo "cross-encoder Rerank JSON: $out"; exit 1; }
  # index 0 is omitted from proto3 JSON; two results carry two scores.
  [ "$(grep -c '"score"' <<<"$out")" = 2 ] || { echo "expected 2 scores: $out"; exit 1; }
  echo "ok: a cross-encoder's Rerank as JSON over TCP"
fi
