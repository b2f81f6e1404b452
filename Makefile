# A thin driver over Meson. Every target that builds installs what it needs first.
PREFIX ?= /usr/local
BUILD ?= build
PYTHON ?= /usr/bin/python3
PYTHON_SITE ?=
FUZZ_SECONDS ?= 10
# pytest's summary must be the last line CI prints, not make's "Leaving directory".
MAKEFLAGS += --no-print-directory

.PHONY: all deps build check check-unit check-e2e check-asan check-vm fuzz fuzz-smoke demo bench install clean

all: build

deps:
	@scripts/install-deps
	@scripts/install-npm-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) --prefix=$(PREFIX)

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

check-unit: build
	meson test -C $(BUILD) --print-errorlogs

# pytest closes the run with its own summary line; exit 5 (no tests ran) is a failure.
# The Python SDK's tests (tests/python) load libcapsule.so into python3 itself: a sanitized
# library needs its runtime preloaded there, and python's own allocations are not ours to
# leak-check, so they run apart, last.
check-e2e: build
	@CAPSULE_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e tests/security; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; rc=1; fi; \
	asan=$$(ldd $(BUILD)/libcapsule.so | awk '/libasan/ {print $$3}'); \
	if [ -n "$$asan" ]; then export LD_PRELOAD=$$asan ASAN_OPTIONS=$$ASAN_OPTIONS:detect_leaks=0; fi; \
	CAPSULE_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -p no:cacheprovider tests/python; \
	rp=$$?; if [ $$rp -eq 5 ]; then echo "pytest collected no SDK tests: failing"; rp=1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$rp

check: deps
	$(MAKE) build
	$(MAKE) check-unit
	$(MAKE) fuzz-smoke FUZZ_SECONDS=5
	$(MAKE) check-e2e

# The same suites under AddressSanitizer + UndefinedBehaviorSanitizer. The agent is linked
# dynamically there (static ASan does not exist); the host image shows it the host's libasan.
# The shim's stderr is /dev/null, so every report goes to a file, and any file fails the run.
# A smaller free-quarantine keeps the streaming tests' RSS bounds meaningful under ASan.
SANITIZER_LOGS = $(CURDIR)/build-asan/sanitizer-logs
check-asan: deps
	@test -f build-asan/build.ninja || meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dstatic_helpers=false --buildtype=debug
	ninja -C build-asan
	rm -rf $(SANITIZER_LOGS) && mkdir -p $(SANITIZER_LOGS)
	ASAN_OPTIONS=log_path=$(SANITIZER_LOGS)/asan:quarantine_size_mb=32 UBSAN_OPTIONS=print_stacktrace=1:log_path=$(SANITIZER_LOGS)/ubsan \
		$(MAKE) check-unit check-e2e BUILD=build-asan
	@if [ -n "$$(ls -A $(SANITIZER_LOGS))" ]; then cat $(SANITIZER_LOGS)/*; echo "sanitizer reports found: failing"; exit 1; fi

build-fuzz/build.ninja:
	CC=clang meson setup build-fuzz -Dfuzz=true -Dstatic_helpers=false -Db_lundef=false

fuzz-smoke: deps build-fuzz/build.ninja
	ninja -C build-fuzz
	tests/fuzz/run-fuzzers build-fuzz $(FUZZ_SECONDS)

fuzz: deps build-fuzz/build.ninja
	ninja -C build-fuzz
	tests/fuzz/run-fuzzers build-fuzz $(or $(SECONDS),120)

# Everything make check runs, plus the vm-isolation tests marked vm_slow (each boots a VM).
check-vm: export CAPSULE_CHECK_VM = 1
check-vm: check

demo: deps
	$(MAKE) build
	@scripts/demo $(abspath $(BUILD))

bench: deps
	$(MAKE) build
	@bench/run $(abspath $(BUILD))
	@bench/pools $(abspath $(BUILD))
	@bench/serve $(abspath $(BUILD))
	@bench/files $(abspath $(BUILD))
	@bench/mounts $(abspath $(BUILD))
	@bench/saves $(abspath $(BUILD))
	@bench/images $(abspath $(BUILD))
	@bench/sdk $(abspath $(BUILD))
	@bench/vm $(abspath $(BUILD))
	@bench/vm-mounts $(abspath $(BUILD))
	@bench/vm_disk $(abspath $(BUILD))
	@bench/net $(abspath $(BUILD))
	@bench/oci $(abspath $(BUILD))

# Installs the library, CLI, helpers, header and the Python SDK (into PYTHON_SITE, default
# $(PREFIX)/lib/python3.X/dist-packages, on the sys.path of Debian's python3 for /usr/local).
install: build
	meson configure $(BUILD) --prefix=$(PREFIX) -Dpython_site=$(PYTHON_SITE)
	meson install -C $(BUILD) --destdir "$(DESTDIR)"

clean:
	rm -rf build build-asan build-fuzz
