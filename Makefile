# SPDX-License-Identifier: MIT
# inginious-backend: build, test, sanitizer, static, bench, demo.
# Every src/*.c goes into libinginious.a; every src/cmd/NAME.c is a program NAME;
# every tests/test_NAME.c is a cmocka test binary; every bench/bench_NAME.c a benchmark.
CC      ?= cc
BUILD   ?= build
SAN     ?= 0

CPPFLAGS += -D_GNU_SOURCE -Iinclude -Isrc -MMD -MP
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wvla -Wundef -Wno-missing-field-initializers
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 $(WARN) -fno-omit-frame-pointer
ifeq ($(SAN),1)
CFLAGS   += -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -DING_SAN=1
LDFLAGS  += -fsanitize=address,undefined
endif

LIB_SRC   := $(sort $(wildcard src/*.c))
CMD_SRC   := $(sort $(wildcard src/cmd/*.c))
TEST_SRC  := $(sort $(wildcard tests/test_*.c))
SUP_SRC   := $(sort $(wildcard tests/support/*.c))
BENCH_SRC := $(sort $(wildcard bench/*.c))

LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
SUP_OBJ   := $(SUP_SRC:%.c=$(BUILD)/obj/%.o)
LIB       := $(BUILD)/libinginious.a
CMDS      := $(CMD_SRC:src/cmd/%.c=$(BUILD)/%)
TESTS     := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCHES   := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all test check san valgrind clang static bench demo interop fuzz fuzz-replay clean
.SECONDARY:

all: $(LIB) $(CMDS) $(TESTS) $(BENCHES)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%: $(BUILD)/obj/src/cmd/%.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(SUP_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lm

# test_noalloc counts the allocations of the server's hot path through the linker.
$(BUILD)/tests/test_noalloc: LDFLAGS += -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
# test_backend fails chosen allocations (an out-of-memory AgentHello changes nothing).
$(BUILD)/tests/test_backend: LDFLAGS += -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc

# test: every test binary, in order; stops at the first failure. The binaries find the
# programs under test through ING_BUILD.
test: all
	@for t in $(TESTS); do \
	    echo "== $$t"; \
	    ING_BUILD=$(BUILD) $$t || { echo "FAILED: $$t"; exit 1; }; \
	done

# check: everything CI runs (README's test command): the suite with gcc, again under
# ASan+UBSan, again under valgrind (tests and the backends they start), a clang build,
# the static binary, the ZeroMQ interoperability suite and a fuzzing replay.
check: test
	$(MAKE) san
	$(MAKE) valgrind
	$(MAKE) clang
	$(MAKE) static
	$(MAKE) interop
	$(MAKE) fuzz-replay

# valgrind: the suite again, each test and every backend it starts under memcheck.
VG := valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99
valgrind: all
	@for t in $(TESTS); do \
	    echo "== valgrind $$t"; \
	    ING_BUILD=$(BUILD) ING_WRAPPER="$(VG)" ING_SLOW=10 $(VG) $$t || { echo "FAILED: $$t"; exit 1; }; \
	done

clang:
	$(MAKE) CC=clang BUILD=build/clang all

# san: the whole suite under ASan + UBSan, in a separate object directory.
san:
	$(MAKE) BUILD=build/san SAN=1 test

# static: a statically linked backend (musl-gcc when installed, else glibc -static).
MUSL := $(shell command -v musl-gcc 2>/dev/null)
static:
ifneq ($(MUSL),)
	$(MAKE) BUILD=build/static CC=musl-gcc LDFLAGS=-static build/static/inginious-backend
else
	$(MAKE) BUILD=build/static LDFLAGS=-static build/static/inginious-backend
endif
	@file build/static/inginious-backend 2>/dev/null || ls -l build/static/inginious-backend

bench: $(LIB) $(CMDS) $(BENCHES)
	bench/run.sh $(BUILD)

demo: $(LIB) $(CMDS)
	examples/demo.sh $(BUILD)

interop: all
	tests/interop/run.sh $(BUILD)

# ---- fuzzing (libFuzzer) ---------------------------------------------------------------
# Needs clang and its compiler-rt (Debian: libclang-rt-14-dev, which holds
# libclang_rt.fuzzer-x86_64.a). Every tests/fuzz/fuzz_NAME.c is a target build/fuzz/fuzz_NAME,
# linked with the library sources compiled again with fuzzer-no-link + ASan + UBSan and
# ING_SAN=1 (objects in build/fuzz/obj).
# fuzz:        run each target for FUZZ_SECONDS (default 60) on a copy of its corpus and
#              regressions (build/fuzz/work/NAME, kept between runs); stops at the first crash,
#              whose reproducer is left in build/fuzz/artifacts/NAME/.
# fuzz-replay: (CI) run each target once over tests/fuzz/corpus/NAME and
#              tests/fuzz/regressions/NAME (-runs=0), then fuzz each for FUZZ_REPLAY_SECONDS.
FUZZ_CC             ?= clang
FUZZ_SECONDS        ?= 60
FUZZ_REPLAY_SECONDS ?= 10
FUZZ_OPTS           ?= -timeout=30 -rss_limit_mb=2048 -print_final_stats=1
FUZZ_BUILD   := build/fuzz
FUZZ_SAN     := address,undefined
FUZZ_CFLAGS  := -std=c11 $(WARN) -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all \
                -DING_SAN=1
FUZZ_SRC     := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_NAMES   := $(FUZZ_SRC:tests/fuzz/%.c=%)
FUZZ_BINS    := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/%)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_LIB     := $(FUZZ_BUILD)/libinginious.a

$(FUZZ_BUILD)/obj/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,$(FUZZ_SAN) -c -o $@ $<

$(FUZZ_BUILD)/obj/tests/fuzz/%.o: tests/fuzz/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer,$(FUZZ_SAN) -c -o $@ $<

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB)
	$(FUZZ_CC) -fsanitize=fuzzer,$(FUZZ_SAN) -o $@ $^ -lm

# fuzz_run(SECONDS): fuzz every target on build/fuzz/work/NAME, seeded from the repository.
define fuzz_run
	@for t in $(FUZZ_NAMES); do \
	    work=$(FUZZ_BUILD)/work/$$t; art=$(FUZZ_BUILD)/artifacts/$$t/; \
	    mkdir -p $$work $$art; \
	    for d in tests/fuzz/corpus/$$t tests/fuzz/regressions/$$t; do \
	        if [ -d $$d ]; then cp -n $$d/* $$work/ 2>/dev/null || true; fi; \
	    done; \
	    echo "== fuzz $$t ($(1) s)"; \
	    $(FUZZ_BUILD)/$$t $(FUZZ_OPTS) -max_total_time=$(1) -artifact_prefix=$$art $$work \
	        || { echo "FUZZ FAILED: $$t (reproducer in $$art)"; exit 1; }; \
	done
endef

fuzz: $(FUZZ_BINS)
	$(call fuzz_run,$(FUZZ_SECONDS))

fuzz-replay: $(FUZZ_BINS)
	@for t in $(FUZZ_NAMES); do \
	    dirs=tests/fuzz/corpus/$$t; \
	    if [ -d tests/fuzz/regressions/$$t ]; then dirs="$$dirs tests/fuzz/regressions/$$t"; fi; \
	    art=$(FUZZ_BUILD)/artifacts/$$t/; mkdir -p $$art; \
	    echo "== replay $$t: $$dirs"; \
	    $(FUZZ_BUILD)/$$t $(FUZZ_OPTS) -runs=0 -artifact_prefix=$$art $$dirs \
	        || { echo "REPLAY FAILED: $$t (input in $$art)"; exit 1; }; \
	done
	$(call fuzz_run,$(FUZZ_REPLAY_SECONDS))

-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_SRC:%.c=$(FUZZ_BUILD)/obj/%.d)
# ---- end of fuzzing ---------------------------------------------------------------------

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(SUP_OBJ:.o=.d) $(CMD_SRC:%.c=$(BUILD)/obj/%.d) \
         $(TEST_SRC:%.c=$(BUILD)/obj/%.d) $(BENCH_SRC:%.c=$(BUILD)/obj/%.d)
