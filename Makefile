# SPDX-License-Identifier: MIT
# inginious-backend: build, install, test, sanitizer, static, bench, demo, packages.
# Every src/*.c goes into build/libinginious-internal.a (never installed), which the programs,
# tests and benchmarks link; the public library libinginious (.a and .so.1) holds only the
# client and agent modules (PUB_MODULES), with every symbol but ing_* made local. Every
# src/cmd/NAME.c is a program NAME; every tests/test_NAME.c is a cmocka test binary; every
# bench/bench_NAME.c a benchmark.
# make (all):  the programs and both libraries, without cmocka.
# make test:   builds and runs the cmocka suite.  make check: what CI runs.
# make install / uninstall, make dist, make deb, make distcheck: see below.
CC      ?= cc
LD      ?= ld
OBJCOPY ?= objcopy
BUILD   ?= build
SAN     ?= 0

# The release, from ING_VERSION_MAJOR/MINOR/PATCH in include/inginious/version.h.
ING_VER  = $(shell sed -n 's/^\#define ING_VERSION_$(1) \([0-9]*\)$$/\1/p' include/inginious/version.h)
SOMAJOR := $(call ING_VER,MAJOR)
VERSION := $(SOMAJOR).$(call ING_VER,MINOR).$(call ING_VER,PATCH)

CPPFLAGS += -D_GNU_SOURCE -Iinclude -Isrc -I$(BUILD)/gen -MMD -MP
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

# The public library: the client and agent libraries, the codec, msgpack, JSON, error texts,
# the version, and the base modules they use. The server and the backend are not in it.
PUB_MODULES := agent auth buf client err json mp net peer proto sha256 version
PUB_SRC     := $(PUB_MODULES:%=src/%.c)

LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
SUP_OBJ   := $(SUP_SRC:%.c=$(BUILD)/obj/%.o)
PUB_OBJ   := $(PUB_SRC:%.c=$(BUILD)/obj/%.o)
PIC_OBJ   := $(PUB_SRC:%.c=$(BUILD)/pic/%.o)
ILIB      := $(BUILD)/libinginious-internal.a
LIB       := $(BUILD)/libinginious.a
SONAME    := libinginious.so.$(SOMAJOR)
SOLIB     := $(BUILD)/libinginious.so.$(VERSION)
SOLINKS   := $(BUILD)/$(SONAME) $(BUILD)/libinginious.so
LIBMAP    := dist/libinginious.map
CMDS      := $(CMD_SRC:src/cmd/%.c=$(BUILD)/%)
TESTS     := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCHES   := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all libs tests benches test check san valgrind clang static bench demo interop fuzz \
        fuzz-replay install uninstall dist deb distcheck mancheck clean FORCE
.SECONDARY:

all: $(CMDS) libs
libs: $(LIB) $(SOLIB) $(SOLINKS)
tests: $(TESTS)
benches: $(BENCHES)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# The status page of the metrics port (src/status.html), compiled into the binary as a C
# array (status_html[], without a NUL) that src/status.c includes.
GEN_HTML := $(BUILD)/gen/status_html.h
$(GEN_HTML): src/status.html
	@mkdir -p $(dir $@)
	@{ echo '/* Generated from src/status.html by the Makefile: do not edit. */'; \
	  echo 'static const unsigned char status_html[] = {'; \
	  od -An -v -tx1 src/status.html | sed -e 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '};'; } > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/src/status.o: $(GEN_HTML)

# The shared library's objects: position-independent, in their own directory.
$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fPIC -c -o $@ $<

$(ILIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# libinginious.a: the public objects linked into one (ld -r), every global but ing_* made
# local, so that nothing un-prefixed can clash with a program's own names.
$(LIB): $(PUB_OBJ)
	@rm -f $@ $(BUILD)/libinginious.o
	$(LD) -r -o $(BUILD)/libinginious.o $^
	$(OBJCOPY) --wildcard --keep-global-symbol='ing_*' $(BUILD)/libinginious.o
	ar rcs $@ $(BUILD)/libinginious.o
	@rm -f $(BUILD)/libinginious.o

# libinginious.so.VERSION (SONAME libinginious.so.MAJOR): only the ing_* symbols of the
# version script are exported, under the version node INGINIOUS_1.0.
$(SOLIB): $(PIC_OBJ) $(LIBMAP)
	$(CC) $(LDFLAGS) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=$(LIBMAP) \
	    $(if $(filter 1,$(SAN)),,-Wl,-z,defs) -Wl,-z,relro -o $@ $(PIC_OBJ)

$(SOLINKS): $(SOLIB)
	ln -sf $(notdir $(SOLIB)) $@

$(BUILD)/%: $(BUILD)/obj/src/cmd/%.o $(ILIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(SUP_OBJ) $(ILIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(ILIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lm

# test_noalloc counts the allocations of the server's hot path through the linker.
$(BUILD)/tests/test_noalloc: LDFLAGS += -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
# test_backend fails chosen allocations (an out-of-memory AgentHello changes nothing).
$(BUILD)/tests/test_backend: LDFLAGS += -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc

# The suite runs through tests/run.sh: every test binary (TEST_JOBS at a time, default one
# after the other), each one's output whole with its wall time, stopping at the first failure,
# then the list of the cases that skipped themselves. The binaries find the programs under
# test through ING_BUILD. Under valgrind (VG_JOBS, default 2) two binaries run at once: each
# is single-threaded under memcheck and every timing they set or wait for is stretched by
# ING_SLOW, so the pass takes about half the time on two cores.
TEST_JOBS ?= 1
VG_JOBS   ?= 2

# test: every test binary.
test: $(CMDS) $(TESTS)
	@tests/run.sh $(BUILD) $(TEST_JOBS) "" $(TESTS)

# check: everything CI runs (README's test command): the suite with gcc, again under
# ASan+UBSan, again under valgrind (tests and the backends they start), a clang build,
# the static binary, the ZeroMQ interoperability suite, a fuzzing replay and the
# distribution check (tests/dist/distcheck.sh).
check: test
	$(MAKE) san
	$(MAKE) valgrind
	$(MAKE) clang
	$(MAKE) static
	$(MAKE) interop
	$(MAKE) fuzz-replay
	$(MAKE) distcheck

# valgrind: the suite again, each test and every backend it starts under memcheck.
VG := valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99
valgrind: $(CMDS) $(TESTS)
	@ING_WRAPPER="$(VG)" ING_SLOW=10 RUN_PREFIX="$(VG)" tests/run.sh $(BUILD) $(VG_JOBS) valgrind $(TESTS)

clang:
	$(MAKE) CC=clang BUILD=build/clang all tests benches

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

bench: $(CMDS) $(BENCHES)
	bench/run.sh $(BUILD)

demo: $(CMDS)
	examples/demo.sh $(BUILD)

interop: $(CMDS)
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
# Targets: fuzz_proto (the native codec), fuzz_mp, fuzz_json, fuzz_http, fuzz_conn (a whole
# connection to an in-process server), fuzz_journal (journal files replayed into a backend,
# with or without repair, CRCs optionally fixed up; its seed corpus is written by
# FUZZ_JOURNAL_SEEDS=DIR build/fuzz/fuzz_journal).
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

$(FUZZ_BUILD)/obj/src/status.o: $(GEN_HTML)

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

# ---- install, packages ------------------------------------------------------------------
# make install [DESTDIR=/tmp/root] [PREFIX=/usr] [BINDIR=..] [LIBDIR=..] [INCLUDEDIR=..]
#              [MANDIR=..] [SYSCONFDIR=..]
# installs the three programs, the headers, libinginious.a, libinginious.so.VERSION with its
# links, inginious.pc, the man pages of dist/man and, when dist/systemd exists, its units
# (into SYSTEMDUNITDIR, with /usr/bin and /etc in them changed to BINDIR and SYSCONFDIR).
# make uninstall removes the same files (same variables).
PREFIX         ?= /usr/local
BINDIR         ?= $(PREFIX)/bin
LIBDIR         ?= $(PREFIX)/lib
INCLUDEDIR     ?= $(PREFIX)/include
MANDIR         ?= $(PREFIX)/share/man
SYSCONFDIR     ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
PKGCONFIGDIR   ?= $(LIBDIR)/pkgconfig
SYSTEMDUNITDIR ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
INSTALL        ?= install

PROGRAMS  := inginious-backend inginious-ctl inginious-agent-process
HEADERS   := $(sort $(wildcard include/inginious/*.h))
MANPAGES  := $(sort $(wildcard dist/man/*.[1-8]))
UNITS     := $(sort $(wildcard dist/systemd/*.service dist/systemd/*.socket))
PCFILE    := $(BUILD)/inginious.pc

# The paths the installed man pages and units name.
SUBST := sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@PREFIX@|$(PREFIX)|g' \
             -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
             -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'

$(PCFILE): dist/inginious.pc.in include/inginious/version.h FORCE
	@mkdir -p $(dir $@)
	@$(SUBST) dist/inginious.pc.in > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; echo "made $@"; fi

FORCE:

install: all $(PCFILE)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	    $(DESTDIR)$(INCLUDEDIR)/inginious
	$(INSTALL) -m 755 $(PROGRAMS:%=$(BUILD)/%) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 644 $(HEADERS) $(DESTDIR)$(INCLUDEDIR)/inginious/
	$(INSTALL) -m 644 $(LIB) $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 755 $(SOLIB) $(DESTDIR)$(LIBDIR)/
	ln -sf $(notdir $(SOLIB)) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libinginious.so
	$(INSTALL) -m 644 $(PCFILE) $(DESTDIR)$(PKGCONFIGDIR)/inginious.pc
	@for m in $(MANPAGES); do \
	    s=$${m##*.}; d=$(DESTDIR)$(MANDIR)/man$$s; \
	    echo "install $$m -> $$d/"; \
	    $(INSTALL) -d $$d && $(SUBST) $$m > $$d/$${m##*/} && chmod 644 $$d/$${m##*/} || exit 1; \
	done
	@for u in $(UNITS); do \
	    d=$(DESTDIR)$(SYSTEMDUNITDIR); echo "install $$u -> $$d/"; \
	    $(INSTALL) -d $$d && $(SUBST) -e 's|/usr/bin/|$(BINDIR)/|g' \
	        -e 's|/etc/inginious|$(SYSCONFDIR)/inginious|g' $$u > $$d/$${u##*/} \
	        && chmod 644 $$d/$${u##*/} || exit 1; \
	done

uninstall:
	rm -f $(PROGRAMS:%=$(DESTDIR)$(BINDIR)/%)
	rm -f $(HEADERS:include/inginious/%=$(DESTDIR)$(INCLUDEDIR)/inginious/%)
	@rmdir $(DESTDIR)$(INCLUDEDIR)/inginious 2>/dev/null || true
	rm -f $(DESTDIR)$(LIBDIR)/libinginious.a $(DESTDIR)$(LIBDIR)/$(notdir $(SOLIB)) \
	    $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libinginious.so
	rm -f $(DESTDIR)$(PKGCONFIGDIR)/inginious.pc
	@for m in $(MANPAGES); do \
	    s=$${m##*.}; echo "rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}"; \
	    rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; \
	done
	@for u in $(UNITS); do \
	    echo "rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/}"; rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/}; \
	done

# make dist: $(BUILD)/inginious-backend-VERSION.tar.gz, the files git tracks (every file but
# build/ outside a git checkout), sorted, owned by 0:0, dated SOURCE_DATE_EPOCH (default:
# the last commit's date, else CHANGELOG.md's): two runs give the same bytes.
DISTNAME := inginious-backend-$(VERSION)
DISTTAR  := $(BUILD)/$(DISTNAME).tar.gz
dist:
	@mkdir -p $(BUILD)
	dist/mkdist.sh $(DISTNAME) $(DISTTAR)

# make deb: $(BUILD)/inginious-backend_VERSION_ARCH.deb, built with dpkg-deb from a DESTDIR
# install with PREFIX=/usr (control files in dist/debian/, see dist/mkdeb.sh).
deb: all
	dist/mkdeb.sh $(BUILD) $(VERSION)

# mancheck: every option of every program's --help is in its man page; mandoc -Tlint is
# silent on every page.
mancheck: $(CMDS)
	tests/dist/mancheck.sh $(BUILD)

# distcheck: the tarball unpacked, built, its make test run (DISTCHECK_TEST=0 skips it),
# installed, linked against, linted and packaged (tests/dist/distcheck.sh).
DISTCHECK_TEST ?= 1
distcheck:
	DISTCHECK_TEST=$(DISTCHECK_TEST) tests/dist/distcheck.sh

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(PIC_OBJ:.o=.d) $(SUP_OBJ:.o=.d) $(CMD_SRC:%.c=$(BUILD)/obj/%.d) \
         $(TEST_SRC:%.c=$(BUILD)/obj/%.d) $(BENCH_SRC:%.c=$(BUILD)/obj/%.d)
