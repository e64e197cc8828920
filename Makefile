# The two commands: `make run` (install, build, serve the demo model) and `make test`
# (install, build, run every test). Other targets are steps of those.
BUILD ?= build
JOBS ?= $(shell nproc)
SOCKET ?= /tmp/embedserve.sock
TCP ?= 127.0.0.1:50051
MODEL ?= demo=tests/data/openclip-reference/model
CMAKE_FLAGS ?=

.PHONY: run test deps build configure lint clean

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

lint: deps
	cd proto && ../$(BUILD)/tools/node_modules/.bin/buf lint

clean:
	rm -rf $(BUILD)
