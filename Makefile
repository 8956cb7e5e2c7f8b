# RemoteMedia: two commands set everything up on a fresh machine.
#   make run    builds the server (release) and starts it with the defaults
#   make test   installs what the suites need and runs every one of them
# Every install step lives here: the Python venv (.venv), Go tools (.tools/bin), cargo crates.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
VPY := $(abspath $(VENV))/bin/python
TOOLS := $(abspath .tools/bin)
CARGO ?= cargo
CARGO_FLAGS := --manifest-path service/Cargo.toml --locked
SERVER_DEBUG := service/target/debug/remotemedia-server
SERVER_RELEASE := service/target/release/remotemedia-server
GRPCURL_VERSION := v1.9.3
GHZ_VERSION := v0.120.0

# The server embeds this venv's Python: pyo3 links its libpython (with an rpath) and the binary
# defaults python_home to it.
export PYO3_PYTHON := $(VPY)
export REMOTEMEDIA_SERVER_BIN := $(abspath $(SERVER_DEBUG))
export REMOTEMEDIA_RELEASE_BIN := $(abspath $(SERVER_RELEASE))
export GRPCURL := $(TOOLS)/grpcurl

# The image (docker/Dockerfile) and what its `prebuilt` route is made from.
DOCKER ?= docker
DOCKER_IMAGE := remotemedia/server:0.1.0
DOCKER_DIST := docker/dist
# Debian bookworm made from Debian's packages by `make docker-base`, for machines that reach no
# container registry; DOCKER_BASE_IMAGE=debian:bookworm-slim builds on the public image instead.
LOCAL_BASE_IMAGE := remotemedia/bookworm:local
DOCKER_BASE_IMAGE ?= $(LOCAL_BASE_IMAGE)
# As in debian:bookworm-slim: no manuals, documentation or translations, in the base image and
# in whatever apt installs on it later (mmdebstrap keeps these dpkg options in the image).
SLIM_DPKG_OPTIONS := $(foreach p,/usr/share/man/* /usr/share/doc/* /usr/share/info/* /usr/share/locale/*,--dpkgopt='path-exclude=$(p)') \
	--dpkgopt='path-include=/usr/share/doc/*/copyright'


.PHONY: deploy-tools test-deployed compose-check docker-tokens
.PHONY: docker-base docker-dist docker-image test-docker test-container
.PHONY: test-data
.PHONY: help venv tools system-deps build build-release run test test-rust test-proto test-python lint fmt proto bench bench-tools bench-load clean
.PHONY: catalogue check-catalogue

# Each client package brings its own targets and adds them to these lists.
CLIENT_TEST_TARGETS :=
CLIENT_LINT_TARGETS :=
-include clients/python/client.mk clients/typescript/client.mk

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## create .venv with every Python dependency
$(VENV)/.installed: requirements-dev.txt service/python/requirements.txt service/python/pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt -e service/python -e clients/python
	touch $@

tools: $(TOOLS)/grpcurl ## install grpcurl with go install
$(TOOLS)/grpcurl:
	GOBIN=$(TOOLS) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

# Installs the Debian packages whose commands are named in $(1) and missing; `command:package`
# where the package has another name.
define apt_install
	@missing=$$(for t in $(1); do command -v $${t%%:*} >/dev/null || echo $${t#*:}; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing with apt-get"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

system-deps: ## install espeak-ng and sox (audio tests) and openssl (TLS test certificates), Debian packages
	$(call apt_install,espeak-ng sox openssl)

deploy-tools: ## install the Docker engine, docker-compose, tini, mmdebstrap and patchelf (image builds), Debian packages
	$(call apt_install,dockerd:docker.io docker-compose tini mmdebstrap patchelf)

build: venv ## build the server (debug)
	$(CARGO) build $(CARGO_FLAGS)

build-release: venv ## build the server (release)
	$(CARGO) build $(CARGO_FLAGS) --release

run: build-release ## build and start the server with the defaults (ARGS="--listen ..." to override)
	exec $(SERVER_RELEASE) $(ARGS)

test: venv tools system-deps deploy-tools build build-release test-rust test-proto check-catalogue test-python $(CLIENT_TEST_TARGETS) test-docker ## run every test suite

test-rust: ## Rust unit and integration tests
	$(CARGO) test $(CARGO_FLAGS)

test-proto: venv ## check the generated Python stubs match proto/
	$(VPY) clients/python/scripts/gen_proto.py --check

# Recorded speech for the model tests, from a registry wheel's assets (tests/speech_data.py
# checks its licence and checksums); kept out of git.
SPEECH_DATA := tests/data/speech
test-data: $(SPEECH_DATA)/PROVENANCE ## fetch the recorded speech the model tests use (from the moonshine-voice wheel)
$(SPEECH_DATA)/PROVENANCE: tests/speech_data.py | $(VENV)/.installed
	$(VPY) tests/speech_data.py fetch

test-python: venv tools system-deps deploy-tools build build-release ts-build test-data ## pytest against the real binaries (and the built TypeScript client, for the catalogue contract)
	$(VPY) -m pytest -q

test-deployed: venv tools ## the checks of a deployed service (REMOTEMEDIA_TARGET=host:port, or the image's entrypoint here)
	$(VPY) -m pytest -q tests/test_deployed.py

compose-check: deploy-tools ## validate docker-compose.yml with docker-compose config
	docker-compose -f docker-compose.yml config -q

docker-base: deploy-tools ## make remotemedia/bookworm:local, Debian bookworm from Debian's packages (once; docker rmi it to refresh)
	@set -o pipefail; $(DOCKER) image inspect $(LOCAL_BASE_IMAGE) >/dev/null 2>&1 || { \
		echo "making $(LOCAL_BASE_IMAGE) with mmdebstrap"; \
		mmdebstrap --variant=minbase --quiet --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr $(SLIM_DPKG_OPTIONS) \
			bookworm - | $(DOCKER) import - $(LOCAL_BASE_IMAGE); }

docker-dist: build-release $(DOCKER_DIST)/remotemedia-server $(DOCKER_DIST)/wheels/requirements.txt ## docker/dist: the release binary and wheels of service/python and its requirements

# The binary loads the libpython of the system it is installed on: the rpath into this
# machine's Python goes, and so does the debug information (symbols stay, for backtraces).
$(DOCKER_DIST)/remotemedia-server: $(SERVER_RELEASE)
	$(call apt_install,patchelf)
	@mkdir -p $(@D)
	cp $< $@.tmp
	patchelf --remove-rpath $@.tmp
	strip --strip-debug $@.tmp
	mv $@.tmp $@

# Every wheel the embedded interpreter's venv needs, so the image build asks no package index.
$(DOCKER_DIST)/wheels/requirements.txt: service/python/requirements.txt service/python/pyproject.toml $(shell find service/python/remotemedia_nodes -name '*.py') | $(VENV)/.installed
	rm -rf $(@D)
	$(VPY) -m pip wheel --quiet --wheel-dir $(@D) -r service/python/requirements.txt ./service/python
	cp service/python/requirements.txt $@

# Builds with the engine's layer cache (the base image and the venv's layer stay until their
# inputs change), then removes what earlier builds left untagged.
docker-image: docker-dist $(if $(filter $(LOCAL_BASE_IMAGE),$(DOCKER_BASE_IMAGE)),docker-base) ## build remotemedia/server:0.1.0 from docker/dist on DOCKER_BASE_IMAGE; prints build time and size
	@start=$$(date +%s); \
	$(DOCKER) build --force-rm --network host --file docker/Dockerfile --target prebuilt \
		--build-arg BASE_IMAGE=$(DOCKER_BASE_IMAGE) --tag $(DOCKER_IMAGE) . && \
	echo "$(DOCKER_IMAGE): built in $$(( $$(date +%s) - start )) s;" \
		"$$($(DOCKER) image inspect --format '{{.Size}}' $(DOCKER_IMAGE) | awk '{ printf "%.0f MB", $$1 / 1e6 }')" && \
	$(DOCKER) image prune --force --filter label=org.opencontainers.image.title=remotemedia-server \
		--filter until=$$start >/dev/null

test-docker: venv tools deploy-tools build-release ## build the image and test it under docker-compose (starts dockerd if none runs, stops what it started)
	docker/with-engine.sh $(MAKE) --no-print-directory docker-image test-container

test-container: venv tools ## the tests of the composed image (tests/test_container.py); needs an engine and the image
	REMOTEMEDIA_IMAGE=$(DOCKER_IMAGE) $(VPY) -m pytest -q -rs tests/test_container.py

# The token file is the compose secret, which the container reads as its user (uid and gid
# 10001): readable by that group only, where the owner can hand the file to it (as root).
DOCKER_TOKENS ?= docker/tokens
docker-tokens: ## write docker/tokens (one random bearer token) for docker compose
	@test -e $(DOCKER_TOKENS) || (umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))' > $(DOCKER_TOKENS))
	@if chgrp 10001 $(DOCKER_TOKENS) 2>/dev/null; then \
		chmod 0640 $(DOCKER_TOKENS); \
		echo "$(DOCKER_TOKENS) holds the bearer token, readable by its owner and group 10001 (the container's user)"; \
	else \
		chmod 0644 $(DOCKER_TOKENS); \
		echo "$(DOCKER_TOKENS) holds the bearer token; group 10001 cannot be given it here (not root), so it is readable by all: keep it out of shared directories"; \
	fi

lint: venv $(CLIENT_LINT_TARGETS) ## rustfmt, clippy and every client's linters
	$(CARGO) fmt --manifest-path service/Cargo.toml --check
	$(CARGO) clippy $(CARGO_FLAGS) --all-targets -- -D warnings

fmt: ## format the Rust code
	$(CARGO) fmt --manifest-path service/Cargo.toml

bench: venv bench-load build-release test-data ## every benchmark: criterion, the Python tools side by side, the load driver, the speech models
	$(CARGO) bench $(CARGO_FLAGS)
	$(VPY) bench/compare_python.py --no-cargo
	$(VPY) bench/speech.py

bench-tools: $(TOOLS)/ghz ## install ghz (the gRPC load driver) with go install
$(TOOLS)/ghz:
	GOBIN=$(TOOLS) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

bench-load: venv bench-tools ## load benchmarks of the release server against a grpcio baseline
	$(VPY) bench/load.py $(BENCH_ARGS)

# The node catalogue: what the server's nodes declare (remotemedia-server catalogue), checked in as
# clients/catalogue.json; the clients' node builders and docs/nodes.md are generated from it.
CATALOGUE_JSON := clients/catalogue.json
CATALOGUE_CMD := $(SERVER_DEBUG) --python true --metrics-listen off catalogue

catalogue: venv build ## regenerate the node catalogue, the clients' node builders and docs/nodes.md from the nodes' declarations
	$(CATALOGUE_CMD) > $(CATALOGUE_JSON).tmp && mv $(CATALOGUE_JSON).tmp $(CATALOGUE_JSON)
	$(VPY) scripts/catalogue.py

check-catalogue: venv build ## fail when the checked-in catalogue, the generated node builders or docs/nodes.md are stale
	@$(CATALOGUE_CMD) | cmp -s - $(CATALOGUE_JSON) || { \
		echo "$(CATALOGUE_JSON) differs from what the nodes declare; run \`make catalogue\` and commit the result" >&2; exit 1; }
	$(VPY) scripts/catalogue.py --check

proto: venv ## regenerate the Python stubs from proto/
	$(VPY) clients/python/scripts/gen_proto.py

clean: ## remove build outputs, the venv and the tools
	$(CARGO) clean --manifest-path service/Cargo.toml
	rm -rf $(VENV) .tools
