# tests/fuzz/fuzz.mk - builds and runs the libFuzzer targets (tests/fuzz/README.md).
# Called by the top Makefile: `make fuzz` (FUZZ_SECONDS=60 per target) and
# `make fuzz-smoke` (10 s per target, part of `make test`).
#
# The engine is compiled a second time, with clang and coverage instrumentation,
# into build/fuzz/ (never build/c/, which gcc owns). New inputs the fuzzers find
# go to build/fuzz/corpus/<target>/; the checked-in seeds under
# tests/fuzz/corpus/<target>/ are only read. A crash, leak or UB report fails the
# run and leaves the input in build/fuzz/artifacts/<target>/.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 10
FUZZ_TARGETS := fuzz_wire_submit fuzz_functions fuzz_auth fuzz_chunks fuzz_router

PKGS       := libh2o-evloop libcurl libbson-1.0 sqlite3 libcrypto
MONGO      := $(shell pkg-config --exists libmongoc-1.0 2>/dev/null && echo libmongoc-1.0)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) $(MONGO))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) $(MONGO)) -lssl -lpthread -ldl

# -DPRPC_UNITTEST as for tests/c: fuzz_auth and fuzz_chunks call functions the
# engine itself does not, which only test builds carry.
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -DPRPC_UNITTEST $(if $(MONGO),-DPRPC_HAVE_MONGOC) \
              -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all -Icsrc
ENGINE_SRC := $(filter-out csrc/py_%.c,$(wildcard csrc/*.c))
ENGINE_OBJ := $(patsubst csrc/%.c,build/fuzz/obj/%.o,$(ENGINE_SRC))
FUZZ_BIN   := $(addprefix build/fuzz/,$(FUZZ_TARGETS))

# Each run: the working corpus first (new inputs land there), then the seeds.
FUZZ_RUN_OPTS := -timeout=20 -rss_limit_mb=3072 -print_final_stats=1 -detect_leaks=1

# The same sanitizer settings as `make ctest` (the top Makefile exports them too).
export LSAN_OPTIONS ?= suppressions=$(CURDIR)/tests/c/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1

.PHONY: build run
.SECONDARY:

build: $(FUZZ_BIN)

build/fuzz/obj/%.o: csrc/%.c $(wildcard csrc/*.h)
	@mkdir -p build/fuzz/obj
	@echo "  CC(fuzz) $<"
	@$(FUZZ_CC) $(FUZZ_FLAGS) -Wall -Wextra -fsanitize=fuzzer-no-link,address,undefined \
	  $(PKG_CFLAGS) -c $< -o $@

build/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz_util.h $(ENGINE_OBJ)
	@echo "  CCLD(fuzz) $@"
	@$(FUZZ_CC) $(FUZZ_FLAGS) -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined \
	  $(PKG_CFLAGS) -Itests/fuzz $< $(ENGINE_OBJ) -o $@ $(PKG_LIBS)

run: build
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  mkdir -p build/fuzz/corpus/$$t build/fuzz/artifacts/$$t; \
	  dict=""; [ -f tests/fuzz/$$t.dict ] && dict="-dict=tests/fuzz/$$t.dict"; \
	  if build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) $(FUZZ_RUN_OPTS) $$dict \
	       -artifact_prefix=build/fuzz/artifacts/$$t/ \
	       build/fuzz/corpus/$$t tests/fuzz/corpus/$$t > build/fuzz/$$t.log 2>&1; then \
	    grep -E "^stat::number_of_executed_units" build/fuzz/$$t.log; \
	  else \
	    grep -E -A12 "ERROR:|FUZZ INVARIANT|^SUMMARY" build/fuzz/$$t.log | head -n 40; \
	    echo "FAIL $$t: see build/fuzz/$$t.log and build/fuzz/artifacts/$$t/"; \
	    failed="$$failed $$t"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets failed:$$failed"; exit 1; fi
