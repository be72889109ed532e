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

# fuzz / fuzz-replay: see the fuzzing block (placeholder until the targets land).
fuzz fuzz-replay:
	@echo "fuzzing targets: not built yet"

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(SUP_OBJ:.o=.d) $(CMD_SRC:%.c=$(BUILD)/obj/%.d) \
         $(TEST_SRC:%.c=$(BUILD)/obj/%.d) $(BENCH_SRC:%.c=$(BUILD)/obj/%.d)
