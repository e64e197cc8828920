# The two commands: `make run` (install, build, serve the demo model) and `make test`
# (install, build, run every test). Other targets are steps of those.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || sysctl -n hw.ncpu)
SOCKET ?= /tmp/embedserve.sock
TCP ?= 127.0.0.1:50051
MODEL ?= demo=tests/data/openclip-reference/model
CMAKE_FLAGS ?=
# macOS: Homebrew's prefix (libtorch's TorchConfig under share/cmake, keg-only icu4c@78,
# openssl@3 and curl) and the Catch2 v2 that scripts/install-deps puts in build/tools.
ifeq ($(shell uname -s),Darwin)
BREW := $(shell brew --prefix 2>/dev/null)
CMAKE_FLAGS += -DCMAKE_PREFIX_PATH="$(BREW);$(BREW)/opt/icu4c@78;$(BREW)/opt/openssl@3;$(BREW)/opt/curl;$(CURDIR)/build/tools/catch2"
export PKG_CONFIG_PATH := $(BREW)/opt/icu4c@78/lib/pkgconfig:$(BREW)/opt/openssl@3/lib/pkgconfig:$(BREW)/opt/curl/lib/pkgconfig:$(PKG_CONFIG_PATH)
endif
FUZZ_SECONDS ?= 20

.PHONY: run test deps build configure lint clean fuzz test-asan test-tsan ci docker-check

run: build
	@echo "embedserve: serving the project's tiny demo model (random weights, 32-d; pass MODEL=NAME=DIR for a real one)"
	$(BUILD)/server/embedserve --listen unix:$(SOCKET) --listen $(TCP) --model $(MODEL)

test: build
	cd $(BUILD) && ctest --output-on-failure -j2 --timeout 1200

deps:
	scripts/install-deps

configure: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# CI runs `make test`, then these: fuzzing (bounded), the suite under ASan+UBSan, and the
# pipeline tests under TSan.
ci: test fuzz test-asan test-tsan

# Each libFuzzer target for FUZZ_SECONDS over its corpus (tests/fuzz/corpus/<target>, every
# file run first, so kept crashes are regression tests); a crash fails the step and its
# input is kept there as regression-<kind>-<sha1> (see scripts/fuzz).
fuzz: deps
	scripts/fuzz $(FUZZ_SECONDS)

# Everything built with ASan+UBSan, the whole ctest suite run on it (the Python and buf tests
# drive the instrumented server binary as a subprocess, so they stay in). Excluded, and why:
# - "random checkpoints at full size ..." (the [large] case in tests/models/openclip_test.cc):
#   it allocates several GB of weights at full size, which ASan's shadow memory and
#   quarantine multiply; it checks shapes/finiteness, not memory safety, and runs in
#   `make test`. The same for "a full-size ViT-B-32 in int8 ..." (tests/models/int8_test.cc).
ASAN_EXCLUDE ?= random checkpoints at full size|a full-size ViT-B-32 in int8
test-asan: deps
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBEDSERVE_SANITIZER=address -DEMBEDSERVE_BUILD_BENCHMARKS=OFF
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(CURDIR)/tests/sanitizers/ubsan.supp \
	  ctest --output-on-failure -j2 --timeout 1800 -E "$(ASAN_EXCLUDE)"

test-tsan: deps
	cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBEDSERVE_SANITIZER=thread -DEMBEDSERVE_BUILD_BENCHMARKS=OFF
	cmake --build build-tsan -j $(JOBS) --target pipeline_tests
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/sanitizers/tsan.supp build-tsan/tests/server/pipeline_tests

# The images of docker/ (Dockerfile, Dockerfile.client) built without a Docker engine
# (debootstrap + buildah) and run: served from the image, called from the host and the client
# image, checked against this build's server (see scripts/docker-check). Not in CI: the
# first run compiles the server inside the image, about an hour on 2 cores.
docker-check: configure
	cmake --build $(BUILD) -j $(JOBS) --target embedserve
	scripts/docker-check $(BUILD)/server/embedserve

lint: deps
	cd proto && ../$(BUILD)/tools/node_modules/.bin/buf lint

clean:
	rm -rf $(BUILD) build-fuzz build-asan build-tsan
