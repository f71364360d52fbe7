# plumb: the two commands a new user runs are `make demo` and `make test`.
# Both install missing Debian packages first (scripts/deps.sh), then build.

BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_GENERIC ?= build-generic
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all build deps demo test test-unit test-asan parity bench clean fuzz-build fuzz

all: build

deps:
	@sh scripts/deps.sh

# Stamped by the generated Makefile, not CMakeCache.txt: a configure that
# failed (a package missing) leaves a cache but no Makefile, and reruns.
$(BUILD)/Makefile:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

build: $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

# The main job: see scripts/demo.sh.
demo: deps
	@$(MAKE) --no-print-directory build
	@sh scripts/demo.sh $(BUILD)

# The whole suite: every test, then the unit and integration tests again
# under AddressSanitizer + UBSan, then the kernel and model tests on the
# kernels' portable paths. GPU tests skip themselves without a GPU;
# parity tests (torch, transformers) run only with `make parity`.
test: deps
	@$(MAKE) --no-print-directory build
	cd $(BUILD) && ctest --output-on-failure -LE parity -j 2
	@$(MAKE) --no-print-directory test-asan
	@$(MAKE) --no-print-directory test-generic

# The CPU kernels without AVX-512 or FMA (x86-64's baseline), the paths a
# native build on an AVX-512 machine never takes: the tests of the
# kernels, the model, generation and exact log-probs, built for them.
GENERIC_TESTS = test_kernels test_kernels_attention test_matmul_packed test_exact_logprobs \
  test_model test_generate test_hf_reference test_llama2c_reference
test-generic:
	cmake -S . -B $(BUILD_GENERIC) -DCMAKE_BUILD_TYPE=Release -DPLUMB_NATIVE=OFF -DPLUMB_CUDA=OFF $(CMAKE_ARGS)
	cmake --build $(BUILD_GENERIC) -j $(JOBS) --target plumb $(GENERIC_TESTS)
	cd $(BUILD_GENERIC) && ctest --output-on-failure -j 2 \
	  -R "^($(shell echo $(GENERIC_TESTS) | tr ' ' '|'))$$"

test-asan:
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DPLUMB_SANITIZE=ON -DPLUMB_CUDA=OFF $(CMAKE_ARGS)
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -L "unit|integration" -LE slow -j 2

parity: build
	cd $(BUILD) && ctest --output-on-failure -L parity

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_GENERIC)

# Fuzzing (libFuzzer, clang + ASan + UBSan; see fuzz/README.md).
#   make fuzz-build                 builds fuzz-build/fuzz_<name>, one per
#                                   fuzz/fuzz_<name>.c (installs
#                                   libclang-rt-14-dev when missing)
#   make fuzz [FUZZ_SECONDS=60]     runs each harness FUZZ_SECONDS seconds,
#                                   FUZZ_JOBS at a time, from its seeds in
#                                   fuzz/corpus/<name>/; crashes land in
#                                   fuzz-build/crashes/ and fail the target
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= $(JOBS)

fuzz-build:
	@sh fuzz/build.sh

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) bash fuzz/run.sh
