# One-command entry points. Run as root on Debian 12 (the tests and the demo
# create namespaces and use ptrace):
#   sudo make deps    install the Debian packages and Rust components that are missing
#   sudo make build   build everything (binaries, tests, examples)
#   sudo make test    deps + build + every test + clippy + rustfmt (CI runs this)
#   sudo make demo    a 3-node local cluster running a program under popcorn
#   sudo make bench   release build + benchmarks -> bench/freeze.json, bench/migrate.json, bench/xisa.json
#   sudo make clean-clusters   remove the demo's and the tests' local clusters

SHELL := /bin/bash
CARGO ?= cargo
DEBIAN_PACKAGES := build-essential gcc clang libbpf-dev iproute2 util-linux procps iputils-ping tmux pkg-config \
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu qemu-user qemu-user-static gdb-multiarch

.PHONY: deps build test demo bench clean-clusters root

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing \
	    || { echo "make deps: FAILED to install$$missing (run as root?)"; exit 1; }; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "make deps: cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
	@for c in fmt:rustfmt clippy:clippy; do \
	  sub=$${c%%:*}; comp=$${c##*:}; \
	  if ! $(CARGO) $$sub --version >/dev/null 2>&1; then \
	    if command -v rustup >/dev/null; then rustup component add $$comp; \
	    else echo "make deps: cargo $$sub missing and no rustup to install $$comp"; exit 1; fi; \
	  fi; done

build:
	$(CARGO) build --workspace --all-targets

root:
	@[ "$$(id -u)" = 0 ] || { echo "this target must run as root (sudo make ...): it creates namespaces and uses ptrace"; exit 1; }

# Every step runs even if an earlier one fails, so one CI run shows all
# problems; the cargo test summary lines are repeated at the end.
test: root deps build
	@log=$$(mktemp); fail=""; \
	echo "== cargo test --workspace"; \
	$(CARGO) test --workspace --no-fail-fast 2>&1 | tee $$log; [ $${PIPESTATUS[0]} -eq 0 ] || fail="$$fail cargo-test"; \
	echo "== cargo clippy --workspace --all-targets -- -D warnings"; \
	$(CARGO) clippy --workspace --all-targets -- -D warnings || fail="$$fail clippy"; \
	echo "== cargo fmt --all -- --check"; \
	$(CARGO) fmt --all -- --check || fail="$$fail rustfmt"; \
	echo "== summary"; \
	grep -E "^(     Running|   Doc-tests|test result:)" $$log || true; \
	rm -f $$log; \
	if [ -n "$$fail" ]; then echo "make test: FAILED:$$fail"; exit 1; fi; \
	echo "make test: all passed"

demo: root deps build
	scripts/demo.sh

bench: root deps
	$(CARGO) build --workspace --release
	mkdir -p bench
	target/release/popcorn bench freeze --output bench/freeze.json.tmp >/dev/null
	mv bench/freeze.json.tmp bench/freeze.json
	target/release/popcorn bench migrate --output bench/migrate.json.tmp >/dev/null
	mv bench/migrate.json.tmp bench/migrate.json
	target/release/popcorn bench xisa --output bench/xisa.json.tmp >/dev/null
	mv bench/xisa.json.tmp bench/xisa.json
	@echo "wrote bench/freeze.json, bench/migrate.json and bench/xisa.json"

# Every local cluster (namespaces pc-NAME-NODE), wherever its files are.
clean-clusters: root
	@for n in $$(ip netns list | sed -n 's/^pc-\([a-z0-9]*\)-.*/\1/p' | sort -u) $$(ls -d /run/popcorn-test-* 2>/dev/null | sed 's|/run/popcorn-test-|t|'); do \
	  case $$n in popcorn) d=/run/popcorn-cluster;; t*) d=/run/popcorn-test-$${n#t};; *) d=/run/popcorn-cluster-$$n;; esac; \
	  echo "popcorn cluster down --name $$n --dir $$d"; target/debug/popcorn cluster down --name "$$n" --dir "$$d"; done
