# Plinth. The two commands a newcomer needs:
#   make demo   runs a server, an agent and two workloads end to end
#   make test   installs what is missing and runs every test
GO ?= go
BIN := $(CURDIR)/bin
DEBS := swtpm swtpm-tools tpm2-tools softhsm2 libssl-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build demo test deps bench fuzz vet clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./demo/...

demo: build
	$(BIN)/plinth-demo -bin $(BIN) -hsm "$(HSM)"

# deps installs the Debian packages the TPM and HSM tiers use, only when one
# is missing, and downloads the Go modules.
deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(GO) mod download

vet:
	$(GO) vet ./...

test: deps vet
	$(GO) test -count=1 -timeout 20m ./...

bench: build
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench/

# Long fuzzing is opt-in; `make test` runs the seed corpora. Each target
# runs for FUZZTIME in turn.
FUZZTIME ?= 60s
FUZZ_TARGETS := conf:FuzzParseServer conf:FuzzParseAgent procfs:FuzzParseStartTime procfs:FuzzParseStartTimeComm \
	tpm/verify:FuzzParsePublic tpm/verify:FuzzVerifyQuote tpm/verify:FuzzVerifyCertify tpm/verify:FuzzEKCert \
	tpm/verify:FuzzParseEventLog tpm/verify:FuzzReplayEventLog \
	attestors/awsiid:FuzzAttest attestors/awsiid:FuzzDecodePayload attestors/gcpiit:FuzzAttest attestors/gcpiit:FuzzDecodePayload \
	attestors/azuremsi:FuzzAttest attestors/azuremsi:FuzzDecodePayload
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "fuzzing $$fn in ./$$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./$$pkg/ || exit 1; \
	done

clean:
	rm -rf $(BIN)
