# One-command entry points. Run as root on Debian 12:
#   sudo make demo   a 3-node local cluster running a program under popcorn
#   sudo make test   install what is missing, build, run every test (CI runs this)

CARGO ?= cargo
DEBIAN_PACKAGES := build-essential gcc clang pkg-config iproute2 util-linux procps iputils-ping tmux

.PHONY: deps build test demo bench clean-clusters

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup)"; exit 1; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

build: deps
	$(CARGO) build --workspace --all-targets

test: build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

demo: build
	scripts/demo.sh

bench: deps
	$(CARGO) build --workspace --release
	mkdir -p bench
	target/release/popcorn bench freeze --output bench/freeze.json
