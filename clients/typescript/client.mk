# The TypeScript client (@remotemedia/client): installs, checks, builds and tests it.
# Included by the main Makefile; every path here is relative to the repository root.

TS_DIR := clients/typescript
TS_STAMP := $(TS_DIR)/node_modules/.installed
NPM ?= npm
# Debian's Chromium drives the example-page test through playwright-core; no browser download.
CHROMIUM ?= /usr/bin/chromium
export REMOTEMEDIA_CHROMIUM := $(CHROMIUM)

.PHONY: ts-deps chromium test-typescript lint-typescript ts-generate ts-build

ts-deps: $(TS_STAMP) ## install the TypeScript client's npm dependencies (npm ci)
# Keyed on the lock file: a changed lock reinstalls, an unchanged one is a no-op.
$(TS_STAMP): $(TS_DIR)/package-lock.json $(TS_DIR)/package.json
	cd $(TS_DIR) && $(NPM) ci --no-audit --no-fund
	touch $@

chromium: ## install Debian's chromium for the browser example test
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "installing chromium with apt-get"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	fi

ts-generate: ts-deps ## regenerate the TypeScript client's code from proto/
	cd $(TS_DIR) && $(NPM) run generate

ts-build: ts-deps ## build the TypeScript client (ESM and CJS)
	cd $(TS_DIR) && $(NPM) run build

# system-deps: the microphone page's test speaks its WAV with espeak-ng and sox.
test-typescript: ts-deps chromium system-deps build test-data ## generated-code check, build, tests and npm pack test of the TypeScript client
	cd $(TS_DIR) && $(NPM) run check-generated
	cd $(TS_DIR) && $(NPM) run build
	cd $(TS_DIR) && $(NPM) test

lint-typescript: ts-deps ## eslint and tsc --noEmit over the TypeScript client
	cd $(TS_DIR) && $(NPM) run lint

CLIENT_TEST_TARGETS += test-typescript
CLIENT_LINT_TARGETS += lint-typescript
