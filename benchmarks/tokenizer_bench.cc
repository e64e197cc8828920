// Tokenizer benchmark: ClipTokenizer::Encode throughput (texts/s and MB/s, median of several
// runs, one thread) for short captions and for ~1 KB texts.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "server/tokenizers/clip_tokenizer.h"

namespace {

using embedserve::tokenizers::ClipTokenizer;
using Clock = std::chrono::steady_clock;

std::vector<std::string> ShortCaptions() {
  return {"a photo of a dog",
          "a photo of a cat sitting on a windowsill",
          "two dogs playing in the snow",
          "an invoice with a table of line items and a total of $1,234.56",
          "What is the revenue growth in Q3 2024?",
          "scanned page of a contract, signature at the bottom",
          "A close-up photograph of a red rose with water droplets",
          "aerial view of a city at night",
          "Crème brûlée à la carte",
          "a diagram of the transformer architecture",
          "A man riding a bicycle down a busy street",
          "日本語のテキスト",
          "a bowl of fruit on a wooden table",
          "the Eiffel Tower at sunset, oil painting",
          "Hello &amp; goodbye",
          "an astronaut riding a horse on the moon"};
}

std::vector<std::string> KilobyteTexts(int count) {
  static const char* kWords[] = {
      "the", "model", "embedding", "of", "a", "document", "page", "with", "tables", "and",
      "figures", "revenue", "increased", "by", "12.5%", "in", "Q3", "compared", "to", "last",
      "year's", "results", "while", "operating", "costs", "remained", "flat", "customers",
      "reported", "higher", "satisfaction", "scores", "across", "all", "regions", "(EMEA,",
      "APAC)", "naïve", "café", "résumé", "2024-11-24", "invoice", "#4821", "signature",
      "contract", "terms", "conditions", "apply", "photograph", "showing", "mountains"};
  std::mt19937 rng(42);
  std::uniform_int_distribution<size_t> pick(0, sizeof(kWords) / sizeof(kWords[0]) - 1);
  std::vector<std::string> texts;
  for (int i = 0; i < count; ++i) {
    std::string text;
    while (text.size() < 1024) {
      if (!text.empty()) text += ' ';
      text += kWords[pick(rng)];
    }
    text.resize(1024);
    while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) {
      text.pop_back();
    }
    if (!text.empty() && static_cast<unsigned char>(text.back()) >= 0xC0) text.pop_back();
    texts.push_back(text);
  }
  return texts;
}

// context_length 77 with truncation (what the server does), or 0: whole text, no truncation.
void Run(const ClipTokenizer& tok, const char* name, const std::vector<std::string>& texts,
         double seconds_per_run, int runs, int context_length = 77) {
  const bool truncate = context_length > 0;
  if (!truncate) context_length = 1 << 30;
  size_t bytes_per_pass = 0;
  for (const auto& t : texts) bytes_per_pass += t.size();
  // Warm-up (fills the word cache, like a server that has been running).
  for (const auto& t : texts) (void)tok.Encode(t, context_length, truncate);
  std::vector<double> texts_per_s, mb_per_s;
  size_t tokens = 0;
  for (int r = 0; r < runs; ++r) {
    size_t done = 0, bytes = 0;
    const auto start = Clock::now();
    double elapsed = 0;
    do {
      for (const auto& t : texts) {
        auto encoded = tok.Encode(t, context_length, truncate);
        if (!encoded.ok()) {
          std::fprintf(stderr, "encode failed: %s\n", encoded.status().ToString().c_str());
          std::exit(1);
        }
        tokens += encoded->ids.size();
      }
      done += texts.size();
      bytes += bytes_per_pass;
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < seconds_per_run);
    texts_per_s.push_back(done / elapsed);
    mb_per_s.push_back(bytes / elapsed / 1e6);
  }
  std::sort(texts_per_s.begin(), texts_per_s.end());
  std::sort(mb_per_s.begin(), mb_per_s.end());
  std::printf("%-22s %6zu texts, %7.1f B avg: %10.0f texts/s  %7.2f MB/s  (median of %d)\n",
              name, texts.size(), static_cast<double>(bytes_per_pass) / texts.size(),
              texts_per_s[runs / 2], mb_per_s[runs / 2], runs);
  if (tokens == 0) std::printf("no tokens?\n");
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 0.5;
  const int runs = 5;
  const auto load_start = Clock::now();
  auto tok = ClipTokenizer::FromBundledVocab();
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
    return 1;
  }
  std::printf("load bundled vocab: %.1f ms\n",
              std::chrono::duration<double, std::milli>(Clock::now() - load_start).count());
  Run(**tok, "short captions", ShortCaptions(), seconds, runs);
  Run(**tok, "1 KB texts", KilobyteTexts(64), seconds, runs);
  Run(**tok, "1 KB texts, untruncated", KilobyteTexts(64), seconds, runs, 0);
  return 0;
}
