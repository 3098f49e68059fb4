# osbake: `make demo` builds and boots the example image; `make test` runs every test.
# Both install what they need on a fresh Debian 12 machine (run as root): `make demo`
# the osbake package alone, `make test` also its extras (console, publish) and test tools.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

# Debian packages: every requirements/apt/*.txt (one package per line, # comments).
APT_PACKAGES := $(shell cat requirements/apt/*.txt | sed 's/\#.*//' | tr -s ' \n' ' ')
# ... and those of requirements/apt/host-programs.txt at the mirror's version (upgraded).
APT_CURRENT := $(shell sed 's/\#.*//' requirements/apt/host-programs.txt | tr -s ' \n' ' ')

.PHONY: all setup apt binfmt venv-base venv demo test test-slow lint typecheck unit integration e2e clean

all: demo

setup: apt binfmt venv

apt: .stamps/apt
.stamps/apt: Makefile $(wildcard requirements/apt/*.txt)
	@mkdir -p .stamps
	@if [ "$$(id -u)" = 0 ]; then \
		missing=$$(for p in $(APT_PACKAGES); do \
			dpkg-query -W -f '$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || echo $$p; \
		done; \
		LC_ALL=C apt-cache policy $(APT_CURRENT) | awk '/^[^ ]/ { p = $$1 } \
			/^  Installed:/ { i = $$2 } /^  Candidate:/ && $$2 != i { print p }'); \
		if [ -n "$$missing" ]; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
		fi; \
	else \
		echo "not root: skipping apt; make sure these are installed: $(APT_PACKAGES)"; \
	fi
	@touch $@

# Foreign builds run the image's arm64 programs through binfmt_misc's qemu-aarch64
# handler (F flag). osbake only checks it (and says how to enable it); this enables it.
binfmt: apt
	@if [ "$$(id -u)" = 0 ]; then \
		[ -e /proc/sys/fs/binfmt_misc/status ] || \
			mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; \
		update-binfmts --enable qemu-aarch64; \
	else \
		echo "not root: skipping binfmt; as root: update-binfmts --enable qemu-aarch64"; \
	fi

# The package alone (what building and booting need): `make demo`.
venv-base: .stamps/venv-base
.stamps/venv-base: pyproject.toml requirements/base.txt .stamps/apt
	@mkdir -p .stamps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

# Everything: the console and publish extras and the test tools (`make test`).
venv: .stamps/venv
.stamps/venv: pyproject.toml $(wildcard requirements/*.txt) .stamps/venv-base
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# The main job: the cloud image, built (cached: a second run takes seconds) and
# booted under QEMU with BIOS and with UEFI, each boot checked on the serial console.
demo: apt venv-base
	$(BIN)/osbake build examples/debian-cloud.yaml -o $(OUT)
	$(BIN)/osbake inspect $(OUT)/debian-cloud.qcow2 --summary
	$(BIN)/osbake boot $(OUT)/debian-cloud.qcow2 --firmware bios --expect 'login:'
	$(BIN)/osbake boot $(OUT)/debian-cloud.qcow2 --firmware uefi --expect 'login:'

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit -q

integration: venv
	$(BIN)/pytest tests/integration -q

e2e: venv
	$(BIN)/pytest tests/e2e -q -m "not slow"

# Everything but the `slow` tests: one arm64 boot (the cloud example's arm64 variant)
# is here; the board-style arm64 image (the generic kernel's initramfs under emulation
# takes tens of minutes on a small host) runs in `make test-slow`.
# --durations lists the slowest tests at the end, to keep an eye on the run's time.
test: setup lint typecheck
	$(BIN)/pytest tests -q -m "not slow" --durations=25

# The tests marked slow: foreign-architecture builds and boots under emulation, and more
# boots of the kinds `make test` has (every format on its platform with every datasource,
# the generic kernel on QEMU's default devices).
test-slow: setup
	$(BIN)/pytest tests -q -m slow

clean:
	rm -rf $(VENV) .stamps $(OUT) .pytest_cache .mypy_cache .ruff_cache
