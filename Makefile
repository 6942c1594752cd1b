# make test   — the whole suite: installs missing peers (libcoap3-bin) when
#               run as root, vets, runs unit, race, fuzz-smoke and integration tests.
# make demo   — the gateway with simulated devices and a built-in backend.
.PHONY: test demo build vet bench

# make bench  — the benchmark table (server CPU per operation, side by side
#               with raw pion/dtls and libcoap); writes bench/BENCHMARKS.md.

test:
	./scripts/test.sh

demo:
	go run ./cmd/gateway demo

# make build  — bin/gateway, static, stamped with the version (git describe)
#               that `bin/gateway version` and gateway_build_info report.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo "(devel)")
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)

build:
	CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/gateway ./cmd/gateway

vet:
	go vet ./...

bench:
	./bench/run.sh
