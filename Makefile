# Thin wrapper over CMake. The two commands a new machine needs:
#   make demo   install what is missing, build, run the demo
#   make test   install what is missing, build, run every test (plus ASan/UBSan and fuzz runs)
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
WERROR     ?= $(if $(CI),ON,OFF)
CMAKE_ARGS ?=

.PHONY: all deps build demo test test-fast asan fuzz-build fuzz bench format clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DKR_WERROR=$(WERROR) $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# PORT=8080 make demo listens elsewhere (see the top of scripts/examples/signalr_demo.lua).
demo: build
	@echo "kestrun demo: http://127.0.0.1:$(or $(PORT),5000)/  (Ctrl-C stops it)"
	$(BUILD)/kestrun scripts/examples/signalr_demo.lua

# Unit + end-to-end tests on the normal build, then the same under ASan+UBSan, then a short
# run of every fuzz target. ctest prints its summary line for each.
test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS) -L 'unit|e2e'
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory fuzz-run

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS) -L 'unit|e2e'

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKR_SANITIZE=address,undefined \
		-DKR_WERROR=$(WERROR) >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j$(JOBS) -L 'unit|e2e'

fuzz-build: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DKR_FUZZ=ON -DKR_SANITIZE=address,undefined \
		-DKR_BUILD_TESTS=OFF -DKR_FUZZ_SECONDS=$(or $(FUZZ_SECONDS),20) >/dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS)

fuzz-run: fuzz-build
	cd $(FUZZ_BUILD) && ctest --output-on-failure -j$(JOBS) -L fuzz

# A longer fuzz session: FUZZ_SECONDS per target (default 600).
fuzz:
	@$(MAKE) --no-print-directory fuzz-run FUZZ_SECONDS=$(or $(FUZZ_SECONDS),600)

# The fan-out benchmark's tools: loadgen and raw_ceiling (build/fanout/), the Node peers (npm ci).
.PHONY: bench-tools
bench-tools:
	$(MAKE) -C bench/fanout && $(MAKE) -C bench/fanout node_modules

bench: build bench-tools
	bench/run.sh

format:
	clang-format -i core/*.c core/*.h lua/*.c lua/*.h tests/unit/*.c tests/unit/*.h tests/fuzz/*.c

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
