# p2prpc - the two commands a newcomer needs:
#   make demo   run the seed's example end to end on this machine
#   make test   C unit tests (ASan+UBSan) then pytest
# Each installs what it needs: Debian packages (only when missing), a .venv with
# the project installed the way users install it (pip install .; the test build,
# with fault injection, for `make test`), test tools.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

DEBS := gcc make pkg-config python3-dev libh2o-evloop-dev libcurl4-openssl-dev libbson-dev \
        libmongoc-dev libsqlite3-dev libssl-dev openssl iproute2 docker-compose clang libclang-rt-14-dev

PKGS      := libh2o-evloop libcurl libbson-1.0 sqlite3 libcrypto
MONGO     := $(shell pkg-config --exists libmongoc-1.0 2>/dev/null && echo libmongoc-1.0)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) $(MONGO))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) $(MONGO)) -lssl -lpthread -ldl

SAN    := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
CFLAGS := -std=c11 -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -DPRPC_UNITTEST -DPRPC_FAULT_INJECTION $(if $(MONGO),-DPRPC_HAVE_MONGOC) \
          -Wall -Wextra -Werror -g -O1 $(SAN) -Icsrc

ENGINE_SRC := $(filter-out csrc/py_%.c,$(wildcard csrc/*.c))
ENGINE_OBJ := $(patsubst csrc/%.c,build/c/%.o,$(ENGINE_SRC))
CTEST_SRC  := $(wildcard tests/c/test_*.c)
CTEST_BIN  := $(patsubst tests/c/%.c,build/c/%,$(CTEST_SRC))

export ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0
export LSAN_OPTIONS ?= suppressions=$(CURDIR)/tests/c/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1

.SECONDARY:
.PHONY: all deps venv install install-test ctest pytest test demo bench fuzz fuzz-smoke clean

all: install

deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.tools: requirements-test.txt
	$(MAKE) deps
	[ -x $(VPY) ] || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-test.txt
	touch $@

venv: $(VENV)/.tools

# Installed as a user does it: build isolation on, requirements from pyproject.toml.
# Two builds take turns in .venv (installing one replaces the other): `install` puts in the
# release build, exactly what users' `pip install .` makes, which the README's commands, demo
# and bench use; `install-test` the test build (P2PRPC_TEST_BUILD=1: fault injection compiled
# in, csrc/fault.h), which pytest, the chaos suite and tests run by hand need.
#
# Python run from the repository root (the README's commands) imports the source folder
# p2prpc/, not .venv's copy, so the engine must be there too: each install puts the very file
# pip built beside the sources (p2prpc/_core*.so, gitignored). A copy, not a second build
# (build_ext --inplace): one compile, and the two cannot differ (tests/python/test_import.py).
PKG_FILES := setup.py pyproject.toml $(wildcard csrc/*.c csrc/*.h p2prpc/*.py p2prpc/_client/*.py p2prpc/*.pyi p2prpc/templates/*)
INPLACE = @rm -f p2prpc/_core*.so && \
	cp "$$($(VPY) -c 'import sysconfig; print(sysconfig.get_path("platlib"))')"/p2prpc/_core*.so p2prpc/

$(VENV)/.installed: $(VENV)/.tools $(PKG_FILES)
	rm -f $(VENV)/.installed-test
	$(VPY) -m pip install -q .
	touch $@

$(VENV)/.installed-test: $(VENV)/.tools $(PKG_FILES)
	rm -f $(VENV)/.installed
	P2PRPC_TEST_BUILD=1 $(VPY) -m pip install -q .
	touch $@

install: $(VENV)/.installed
	$(INPLACE)

install-test: $(VENV)/.installed-test
	$(INPLACE)

build/c/%.o: csrc/%.c $(wildcard csrc/*.h)
	@mkdir -p build/c
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

build/c/test_%: tests/c/test_%.c $(wildcard tests/c/*.h) $(ENGINE_OBJ)
	@echo "  CCLD    $@"
	@$(CC) $(CFLAGS) $(PKG_CFLAGS) -Itests/c $< $(ENGINE_OBJ) -o $@ $(PKG_LIBS)

# Each test binary may run CTEST_TIMEOUT seconds; skips (tests/c/test.h) are totalled at the end.
CTEST_TIMEOUT ?= 300
ctest: deps $(CTEST_BIN)
	@set -e; log=build/c/skipped.log; : > $$log; \
	for t in $(CTEST_BIN); do echo "== $$t"; \
	  PRPC_TEST_SKIP_LOG=$(CURDIR)/$$log timeout -k 10 $(CTEST_TIMEOUT) $$t || { rc=$$?; \
	    [ $$rc -ne 124 ] && [ $$rc -ne 137 ] || echo "$$t: stopped after $(CTEST_TIMEOUT) s (CTEST_TIMEOUT)"; \
	    exit $$rc; }; \
	done; \
	echo "== C tests: $$(wc -l < $$log) skipped"; sed 's/^/  skip /' $$log

pytest: install-test
	$(VENV)/bin/pytest -q -rs tests/python

test: ctest fuzz-smoke pytest

demo: install
	$(VPY) examples/demo.py

# libFuzzer targets (tests/fuzz/README.md): `make fuzz` 60 s each, `make fuzz-smoke` 10 s each.
fuzz: deps
	$(MAKE) -f tests/fuzz/fuzz.mk run FUZZ_SECONDS=60

fuzz-smoke: deps
	$(MAKE) -f tests/fuzz/fuzz.mk run FUZZ_SECONDS=10

# Benchmarks (figures, not tests): each prints its peer beside it. Installs the
# peer tools (redis-server, Celery) for calls.py; QUICK=1 for smaller runs.
bench: install
	@dpkg-query -W -f='$${Status}' redis-server 2>/dev/null | grep -q "install ok installed" || \
	  (DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null)
	$(VPY) -m pip install -q -r bench/requirements.txt
	-$(VPY) bench/hash.py $(if $(QUICK),--quick)
	-$(VPY) bench/calls.py $(if $(QUICK),--quick)
	-$(VPY) bench/files.py $(if $(QUICK),--quick)

clean:
	rm -rf build $(VENV) *.egg-info p2prpc/_core*.so

# ---- A wheel that installs without a compiler (docs/PLATFORMS.md) ----------------------------
# `make wheel`: dist/p2prpc-<version>-cp3XX-cp3XX-manylinux_2_NN_x86_64.whl and the sdist it was
# built from. `pip install` of the wheel needs Python and nothing else: no compiler, no -dev
# packages, no root. python -m build makes the sdist and the plain linux_x86_64 wheel from it
# (a clean tree: never build/'s objects, never a debug or sanitizer build); auditwheel copies
# every library the extension needs except glibc's and libz (which CPython itself links) into
# p2prpc.libs/ and tags the wheel with the most portable policy this build allows
# (WHEEL_PLAT=auto; on Debian 12 that is manylinux_2_34); scripts/wheel_licenses.py adds those
# libraries' copyright files. Tools pinned in requirements-wheel.txt, in build/wheel-tools.
# `make test-wheel` (slow: a Debian chroot, see tests/wheel/chroot_test.sh): installs the wheel
# in a clean Debian 12 that has python3 and nothing else, checks ldd and runs the example there.
# WHEEL=path tests that file instead of building one (e.g. build/wheel/plain/*.whl, which fails).
WHEEL_TOOLS := build/wheel-tools
WHEEL_PLAT  ?= auto
WHEEL_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/p2prpc-build

.PHONY: wheel test-wheel test-long

$(WHEEL_TOOLS)/.tools: requirements-wheel.txt
	[ -x $(WHEEL_TOOLS)/bin/python ] || $(PYTHON) -m venv $(WHEEL_TOOLS)
	$(WHEEL_TOOLS)/bin/python -m pip install -q -r requirements-wheel.txt
	touch $@

wheel: deps $(WHEEL_TOOLS)/.tools
	rm -rf build/wheel
	env -u P2PRPC_DEBUG -u P2PRPC_SANITIZE -u P2PRPC_TEST_BUILD \
	  $(WHEEL_TOOLS)/bin/python -m build -o build/wheel/plain .
	PATH="$(CURDIR)/$(WHEEL_TOOLS)/bin:$$PATH" $(WHEEL_TOOLS)/bin/auditwheel repair \
	  --plat $(WHEEL_PLAT) -w build/wheel/repaired build/wheel/plain/*.whl
	$(WHEEL_TOOLS)/bin/python scripts/wheel_licenses.py build/wheel/repaired/*.whl dist
	cp build/wheel/plain/*.tar.gz dist/
	cd build/wheel/repaired && ls *.whl | sed 's|^|dist/|' > ../latest
	$(WHEEL_TOOLS)/bin/auditwheel show $$(cat build/wheel/latest)
	@echo "make wheel: $$(cat build/wheel/latest) ($$(du -h $$(cat build/wheel/latest) | cut -f1))"

test-wheel: $(if $(WHEEL),$(WHEEL_TOOLS)/.tools,wheel)
	@command -v debootstrap >/dev/null || (DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq debootstrap >/dev/null)
	$(SUDO) tests/wheel/chroot_test.sh $(or $(WHEEL),$$(cat build/wheel/latest)) $(WHEEL_CACHE)

# The long tests include the wheel's (a prerequisite only: the target's recipe, if any, is elsewhere).
test-long: test-wheel
