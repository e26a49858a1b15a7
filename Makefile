# make demo: an online reshard under load in a local lab, verified.
# make test: the whole suite.
# Both install what they need: PostgreSQL from Debian's postgresql package
# when its server binaries are missing, Go modules through the module proxy.

GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN := bin/reshard
TEST_TIMEOUT ?= 30m

.PHONY: all build deps test vet demo faults clean

all: build

deps:
	@scripts/install-deps.sh

build:
	$(GO) build -o $(BIN) ./cmd/reshard

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || (echo "gofmt: files above need formatting" && exit 1)

test: deps vet
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# The full fault suite: every case for both strategies, and a kill in every
# phase of both; the table goes to docs/.
faults: deps
	RESHARD_FAULTS=full RESHARD_FAULTS_OUT=$(CURDIR)/docs/faults-results.md \
		$(GO) test -count=1 -v -run 'TestFaults|TestAbortDuringCopy|TestAbortDestinationDown|TestDestinationDiskFull|TestKillAndResumeEveryPhase|TestKillAndResumeRevert|TestPausePastLease' -timeout 90m ./cmd/reshard/

demo: deps build
	$(BIN) demo $(DEMO_FLAGS)

clean:
	rm -rf bin
