# volume-syncing-operator — everything a fresh machine needs is installed by these targets.
#   make demo    build, start a local S3 server, upload examples/data, restore it, compare
#   make test    install the pinned test tools, lint, run the whole test suite
#   make bench   benchmarks (never part of `make test`)
# See README.md.

RCLONE_VERSION := 1.75.2
TOOLS := $(CURDIR)/tools
CARGO ?= cargo

# rclone for tests, demo and examples: RCLONE_BINARY if given, else the pinned one in tools/.
ifndef RCLONE_BINARY
RCLONE_BINARY := $(TOOLS)/bin/rclone
RCLONE_DEP := $(RCLONE_BINARY)
endif
export RCLONE_BINARY

BIN := target/debug/volume-syncing-operator

.PHONY: all build tools test test-only lint demo bench clean
all: build

build:
	$(CARGO) build

tools: $(RCLONE_DEP)

$(TOOLS)/bin/rclone: scripts/install-rclone.sh
	scripts/install-rclone.sh $(RCLONE_VERSION) $(TOOLS)

## test: lint, then every test (unit and integration, real rclone and S3 server)
test: tools lint test-only

test-only: tools
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

demo: tools build
	scripts/demo.sh

clean:
	$(CARGO) clean
	rm -rf .demo

include examples.mk
