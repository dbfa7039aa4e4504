# ferry: plain Makefile. `make demo` runs the example, `make test` the tests.
#
# Dependencies are named once here: pkg-config modules for the build and the Debian packages
# that provide them (installed by `make deps`).

SHELL    := /bin/bash
CC       ?= cc
BUILD    ?= build
PKGS     := libfabric libprotobuf-c openblas
TEST_PKGS := criterion
DEB_PKGS := build-essential pkg-config clang libclang-rt-14-dev libfabric-dev libfabric-bin \
            libprotobuf-c-dev protobuf-c-compiler libcriterion-dev libopenblas-dev iproute2 nftables \
            slurm-wlm munge openmpi-bin libopenmpi-dev libpmix-dev
PROTOC_C ?= protoc-c

# Before anything is built: what is missing gets installed (as root) or named with the command
# that installs it (tools/ensure_deps.sh), so `make demo` and `make test` are the first commands
# on a fresh Debian machine. `make deps` installs the whole list unconditionally.
ifeq ($(filter deps clean,$(MAKECMDGOALS))$(FERRY_SKIP_DEPS_CHECK),)
ifneq ($(shell sh tools/ensure_deps.sh "$(firstword $(CC)) pkg-config $(PROTOC_C)" \
	"$(PKGS) $(TEST_PKGS)" "$(DEB_PKGS)" >&2; echo $$?),0)
$(error ferry: build dependencies are missing (see above))
endif
endif

OPT      ?= -O2
SANITIZE ?=
ASAN_UBSAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_FLAGS := $(if $(SANITIZE),$(ASAN_UBSAN))

# PMIx (Debian libpmix-dev) is optional: with it init_method pmix:// rendezvous through the
# launcher's PMIx server (mpirun, srun --mpi=pmix); without it pmix:// says ferry lacks it.
HAVE_PMIX  := $(shell pkg-config --exists pmix 2>/dev/null && echo 1)
PMIX_CFLAGS := $(if $(HAVE_PMIX),-DFERRY_HAVE_PMIX $(patsubst -I%,-isystem %,$(shell pkg-config --cflags pmix)))
PMIX_LIBS  := $(if $(HAVE_PMIX),$(shell pkg-config --libs pmix))

# CUDA: built when the CUDA Toolkit is found at CUDA_HOME (FERRY_WITH_CUDA=0 builds without).
# The runtime is linked statically and finds the driver itself when first used, and cuBLAS and
# NCCL are opened at their first use, so libferry loads on machines without a GPU or a driver.
CUDA_HOME ?= /usr/local/cuda
FERRY_WITH_CUDA ?= $(if $(wildcard $(CUDA_HOME)/include/cuda_runtime.h),1,0)
ifeq ($(FERRY_WITH_CUDA),1)
NVCC       ?= $(CUDA_HOME)/bin/nvcc
HAVE_NCCL  := $(if $(wildcard $(CUDA_HOME)/include/nccl.h),1)
CUDA_CFLAGS := -DFERRY_WITH_CUDA $(if $(HAVE_NCCL),-DFERRY_HAVE_NCCL) -isystem $(CUDA_HOME)/include
CUDA_LIBS  := -L$(CUDA_HOME)/lib64 -lcudart_static -lrt
CU_SRCS    := $(sort $(wildcard tensor/cuda/*.cu))
CUDA_ARCHS ?= 80 90
# The kernels' host code is built without exceptions and guarded statics, so libferry links
# with the C toolchain and needs no C++ runtime.
NVCC_FLAGS := -std=c++17 -O2 -g -I. -Iinclude -I$(BUILD) -DFERRY_WITH_CUDA \
              -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra,-Werror,-Wno-unused-parameter \
              -Xcompiler -fno-exceptions,-fno-threadsafe-statics \
              $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
              -gencode arch=compute_$(lastword $(CUDA_ARCHS)),code=compute_$(lastword $(CUDA_ARCHS))
endif

BASE_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(PMIX_CFLAGS)
BASE_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(PMIX_LIBS)
PKG_CFLAGS := $(BASE_CFLAGS) $(CUDA_CFLAGS)
PKG_LIBS   := $(BASE_LIBS) $(CUDA_LIBS)
TEST_CFLAGS := $(shell pkg-config --cflags $(TEST_PKGS) 2>/dev/null)
TEST_LIBS   := $(shell pkg-config --libs $(TEST_PKGS) 2>/dev/null)

WARN     := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) -fPIC -fvisibility=hidden -pthread \
              $(SAN_FLAGS) -I. -Iinclude -I$(BUILD) $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := -pthread $(SAN_FLAGS) $(LDFLAGS)
LIBS_ALL := $(PKG_LIBS) -lm -ldl

LIB_DIRS := core tensor transport rpc rref rref/object autograd autograd/dist optim
LIB_SRCS := $(sort $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
PROTO_C  := $(BUILD)/proto/ferry.pb-c.c
PROTO_H  := $(BUILD)/proto/ferry.pb-c.h
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/proto/ferry.pb-c.o \
            $(CU_SRCS:%.cu=$(BUILD)/obj/%.o)

UNIT_SRCS  := $(sort $(wildcard tests/unit/*.c))
INTEG_SRCS := $(sort $(wildcard tests/integration/*.c tests/fault/*.c))
TESTLIB_SRCS := $(sort $(wildcard tests/common/*.c))
FUZZ_SRCS  := $(sort $(wildcard tests/fuzz/*.c))
EXAMPLES   := $(notdir $(patsubst %/main.c,%,$(wildcard examples/*/main.c)))
# A tool is tools/X.c, or a folder tools/X/ whose .c files make one program.
TOOLS      := $(sort $(notdir $(basename $(wildcard tools/*.c))) \
                     $(notdir $(patsubst %/,%,$(wildcard tools/*/))))
BENCH_SRCS := $(sort $(wildcard bench/*.c))

STATIC := $(BUILD)/libferry.a
SHARED := $(BUILD)/libferry.so.0
UNIT_BIN := $(BUILD)/tests/unit_tests
INTEG_BIN := $(BUILD)/tests/integration_tests
TOOL_BINS := $(TOOLS:%=$(BUILD)/bin/%)
EXAMPLE_BINS := $(EXAMPLES:%=$(BUILD)/examples/%)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

CRITERION_JOBS ?= 2
FUZZ_SMOKE_S ?= 5
FUZZ_LONG_S ?= 300

.PHONY: all deps test test-unit test-integration test-asan test-nocuda test-netns test-launchers fuzz fuzz-smoke demo bench clean \
        check-symbols check-deps check-setup check-headers check-cpp bench-instructions

all: $(STATIC) $(BUILD)/libferry.so $(TOOL_BINS) $(EXAMPLE_BINS)

deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  if [ -z "$(APT_UPDATED)" ]; then apt-get update -qq; fi && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; else echo "deps: all installed"; fi

$(PROTO_C) $(PROTO_H): proto/ferry.proto
	@mkdir -p $(BUILD)/proto
	$(PROTOC_C) --c_out=$(BUILD) $<

$(BUILD)/obj/proto/ferry.pb-c.o: $(PROTO_C)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Wno-error -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.cu | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -MMD -MP -c $< -o $@

# The static library holds one prelinked object, so linking any ferry symbol brings every module
# along (modules register themselves with lower ones from constructors).
$(STATIC): $(LIB_OBJS)
	@rm -f $@
	$(LD) -r -o $(BUILD)/ferry_all.o $^
	ar rcs $@ $(BUILD)/ferry_all.o

$(SHARED): $(LIB_OBJS) ferry.map
	$(CC) -shared -Wl,-soname,libferry.so.0 -Wl,--version-script=ferry.map $(LDFLAGS_ALL) \
	    -o $@ $(LIB_OBJS) $(LIBS_ALL)

$(BUILD)/libferry.so: $(SHARED)
	ln -sf libferry.so.0 $@

TESTLIB_OBJS := $(TESTLIB_SRCS:%.c=$(BUILD)/obj/%.o)
$(BUILD)/obj/tests/%.o: tests/%.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(TEST_CFLAGS) -Itests -Itests/common -MMD -MP -c $< -o $@

$(UNIT_BIN): $(UNIT_SRCS:%.c=$(BUILD)/obj/%.o) $(TESTLIB_OBJS) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(TEST_LIBS) $(LIBS_ALL)

$(INTEG_BIN): $(INTEG_SRCS:%.c=$(BUILD)/obj/%.o) $(TESTLIB_OBJS) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(TEST_LIBS) $(LIBS_ALL)

.SECONDEXPANSION:
$(BUILD)/bin/%: $$(wildcard tools/%.c) $$(wildcard tools/%/*.c) $$(wildcard tools/%/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $(filter %.c,$^) $(STATIC) $(LDFLAGS_ALL) $(LIBS_ALL)

$(BUILD)/examples/%: $$(wildcard examples/%/*.c) $(wildcard examples/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $(filter %.c,$^) $(STATIC) $(LDFLAGS_ALL) $(LIBS_ALL)

$(BUILD)/bench/%: bench/%.c $(wildcard bench/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(STATIC) $(LDFLAGS_ALL) $(LIBS_ALL)

check-symbols: $(SHARED)
	@bad=$$(nm -D --defined-only $(SHARED) | awk '{print $$3}' | grep -v '^ferry_' || true); \
	if [ -n "$$bad" ]; then echo "non-ferry symbols exported:"; echo "$$bad"; exit 1; fi; \
	echo "check-symbols: only ferry_ symbols exported"

# Every public header compiles alone, as C11 and as C++ (its extern "C" guards), and includes
# nothing but the standard library and other ferry headers.
check-headers:
	@for h in include/ferry/*.h; do \
	  echo "#include \"$${h#include/}\"" | $(CC) -std=c11 -Wall -Wextra -Werror -Iinclude -x c -fsyntax-only - || exit 1; \
	  echo "#include \"$${h#include/}\"" | g++ -std=c++11 -Wall -Wextra -Werror -Iinclude -x c++ -fsyntax-only - || exit 1; \
	  if grep -E '^#include <(rdma|protobuf-c|cuda|nccl)' $$h; then echo "$$h includes a dependency's header"; exit 1; fi; \
	done; echo "check-headers: every public header compiles alone as C and C++"

# The C API from a C++ program (tests/cpp): built with g++ -Werror against the library and run.
CPP_TESTS := $(patsubst tests/cpp/%.cpp,$(BUILD)/tests/cpp_%,$(wildcard tests/cpp/*.cpp))
$(BUILD)/tests/cpp_%: tests/cpp/%.cpp $(wildcard include/ferry/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	g++ -std=c++11 -Wall -Wextra -Werror -g $(SAN_FLAGS) -Iinclude -o $@ $< $(STATIC) \
	    $(LDFLAGS_ALL) $(LIBS_ALL) -lstdc++

check-cpp: $(CPP_TESTS)
	@for t in $(CPP_TESTS); do $(TEST_ENV) $$t || exit 1; done

# Lower modules never include higher modules' headers (DESIGN section 2); the second script
# checks that the checker itself refuses planted upward includes.
check-deps:
	@sh tools/check_deps.sh
	@sh tests/check_deps_test.sh

# The dependency check before every build stops with the install line when a package is missing.
check-setup:
	@sh tests/ensure_deps_test.sh

# Test output is kept in $(BUILD)/*.log; under sanitizers a leak report anywhere in it (Criterion
# does not fail a test whose process leaked) fails the run.
TEST_ENV ?=
test: all $(UNIT_BIN) $(INTEG_BIN) check-symbols check-deps check-setup check-headers check-cpp
	set -o pipefail; $(TEST_ENV) $(UNIT_BIN) --jobs $(CRITERION_JOBS) 2>&1 | tee $(BUILD)/unit.log
	set -o pipefail; $(TEST_ENV) $(INTEG_BIN) --jobs 1 2>&1 | tee $(BUILD)/integration.log
	@for e in model_parallel_sgd remote_class pipeline model_parallel_rnn parameter_server; do \
	  $(TEST_ENV) $(BUILD)/examples/$$e > $(BUILD)/example_$$e.log 2>&1 || \
	    { cat $(BUILD)/example_$$e.log; exit 1; }; tail -n 1 $(BUILD)/example_$$e.log; done
	@sh tests/examples/compare_with_torch.sh $(BUILD)
	@if grep -l "ERROR: LeakSanitizer" $(BUILD)/unit.log $(BUILD)/integration.log \
	  $(BUILD)/example_*.log; then \
	  echo "leaks reported (see the logs above)"; exit 1; fi
	@$(MAKE) --no-print-directory test-netns
	@$(MAKE) --no-print-directory test-launchers
	@$(MAKE) --no-print-directory fuzz-smoke

# Two "hosts" in network namespaces (root only; skipped elsewhere).
NETNS_BINS := $(patsubst tests/netns/%.c,$(BUILD)/tests/netns_%,$(wildcard tests/netns/*.c))
$(BUILD)/tests/netns_%: tests/netns/%.c tests/netns/netns_util.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(STATIC) $(LDFLAGS_ALL) $(LIBS_ALL)

test-netns: all $(NETNS_BINS)
	@bash tests/netns/run.sh $(BUILD)

# The same jobs under the launchers clusters use (ferryrun, torchrun's environment, mpirun, srun
# with and without PMIx, sbatch, two "hosts"); a launcher missing here is reported as skipped.
LAUNCH_BINS := $(patsubst tests/launchers/%.c,$(BUILD)/tests/%,$(wildcard tests/launchers/*.c))
$(BUILD)/tests/%: tests/launchers/%.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(STATIC) $(LDFLAGS_ALL) $(LIBS_ALL)

test-launchers: all $(LAUNCH_BINS)
	@$(TEST_ENV) bash tests/launchers/run.sh $(BUILD)

# The other build configuration, without CUDA even where the toolkit is installed: CI runs it
# after `make test`. The unit tests and every device test (the emulation) run in it.
NOCUDA_BUILD ?= build-nocuda
test-nocuda:
	$(MAKE) --no-print-directory BUILD=$(NOCUDA_BUILD) FERRY_WITH_CUDA=0 all \
	  $(NOCUDA_BUILD)/tests/unit_tests $(NOCUDA_BUILD)/tests/integration_tests
	set -o pipefail; $(NOCUDA_BUILD)/tests/unit_tests --jobs $(CRITERION_JOBS) 2>&1 | \
	  tee $(NOCUDA_BUILD)/unit.log
	set -o pipefail; $(NOCUDA_BUILD)/tests/integration_tests --jobs 1 --filter '*device*/*' 2>&1 | \
	  tee $(NOCUDA_BUILD)/integration.log

test-asan:
	$(MAKE) BUILD=build-asan SANITIZE=1 OPT=-O1 FUZZ_SMOKE_S=0 \
	  TEST_ENV="ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 UBSAN_OPTIONS=print_stacktrace=1" test

# libFuzzer targets need clang; without it the smoke run says so and passes. They build from the
# sources alone, without CUDA (nvcc output cannot take the fuzzer's instrumentation); the
# decoders, device descriptors included, are the same in both configurations.
FUZZ_BUILD := build-fuzz
# The library is compiled once for all targets (instrumented, not linked with the fuzzer's
# main), then each target links against it.
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(FUZZ_BUILD)/fuzz/%)
FUZZ_CC := clang -std=c11 -D_GNU_SOURCE -g -O1 -pthread -I. -Iinclude -I$(FUZZ_BUILD) $(BASE_CFLAGS)
FUZZ_OBJS := $(LIB_SRCS:%.c=$(FUZZ_BUILD)/obj/%.o) $(FUZZ_BUILD)/obj/proto/ferry.pb-c.o
$(FUZZ_BUILD)/proto/ferry.pb-c.c $(FUZZ_BUILD)/proto/ferry.pb-c.h: proto/ferry.proto
	@mkdir -p $(FUZZ_BUILD)/proto
	$(PROTOC_C) --c_out=$(FUZZ_BUILD) $<
$(FUZZ_BUILD)/obj/proto/ferry.pb-c.o: $(FUZZ_BUILD)/proto/ferry.pb-c.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@
$(FUZZ_BUILD)/obj/%.o: %.c | $(FUZZ_BUILD)/proto/ferry.pb-c.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@
$(FUZZ_BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_OBJS) $(BASE_LIBS) -lm -ldl
-include $(FUZZ_OBJS:.o=.d)
.SECONDARY: $(FUZZ_OBJS)

fuzz-smoke:
	@if [ "$(FUZZ_SMOKE_S)" = 0 ]; then echo "fuzz smoke: skipped in this build"; \
	elif ! command -v clang >/dev/null; then echo "fuzz smoke: clang not found, skipped"; \
	else $(MAKE) --no-print-directory $(FUZZ_BINS) && for f in $(FUZZ_BINS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$(basename $$f); \
	  $$f -max_total_time=$(FUZZ_SMOKE_S) -print_final_stats=1 -rss_limit_mb=2048 $(FUZZ_BUILD)/corpus/$$(basename $$f) \
	      tests/fuzz/seeds/$$(basename $$f) 2>$(FUZZ_BUILD)/$$(basename $$f).log || \
	      { tail -40 $(FUZZ_BUILD)/$$(basename $$f).log; exit 1; }; \
	  echo "fuzz smoke: $$(basename $$f) ran $(FUZZ_SMOKE_S)s, $$(grep -o 'stat::number_of_executed_units: [0-9]*' $(FUZZ_BUILD)/$$(basename $$f).log | tail -1 || true) no crash"; \
	done; fi

fuzz: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do mkdir -p $(FUZZ_BUILD)/corpus/$$(basename $$f); \
	  $$f -max_total_time=$(FUZZ_LONG_S) -print_final_stats=1 $(FUZZ_BUILD)/corpus/$$(basename $$f) \
	      tests/fuzz/seeds/$$(basename $$f) || exit 1; done

demo: all
	@sh examples/demo.sh $(BUILD)

# `make run-<example>` builds everything and runs examples/<example> (it starts its own ranks).
run-%: all
	$(BUILD)/examples/$*

bench: all $(BENCH_BINS)
	@for b in $(BENCH_BINS); do $$b || exit 1; done
	@sh bench/examples_vs_torch.sh $(BUILD)
	@$(MAKE) --no-print-directory $(LAUNCH_BINS) && bash bench/launchers.sh $(BUILD)

# Instructions per tiny round trip under callgrind, ferry beside fi_pingpong (shm and tcp).
bench-instructions: $(BUILD)/bench/ferry_bench
	@bash bench/instructions.sh $(BUILD)

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
