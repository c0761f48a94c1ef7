# tierlog: `make test` is the one command that runs every test; CI runs it.
GO        ?= go
FUZZTIME  ?= 10s
TESTFLAGS ?= -race -timeout 20m

.PHONY: test vet fuzz fuzz-long bench proto build compose-check serve minio kafka-clients fault-tools

# The MinIO server the S3 and MinIO backend tests run against: built from
# source at the version pinned in internal/testutil/minio_version.txt (the
# tests read the same file), cached between runs, rebuilt only if missing.
MINIO_VERSION     := $(shell cat internal/testutil/minio_version.txt)
TIERLOG_CACHE_DIR ?= $(HOME)/.cache/tierlog
MINIO_BIN         := $(TIERLOG_CACHE_DIR)/minio-$(MINIO_VERSION)/minio

build:
	$(GO) build -o bin/tierlog ./cmd/tierlog

serve:
	$(GO) run ./cmd/tierlog serve

# Every test: formatting and vet, unit, fault and crash tests (race
# detector on), short fuzz runs of every decoder, the compose file check.
test: export TIERLOG_MINIO_BIN = $(MINIO_BIN)
test: vet minio kafka-clients fault-tools
	$(GO) test $(TESTFLAGS) ./...
	$(MAKE) fuzz
	$(MAKE) compose-check

minio: $(MINIO_BIN)

# Built into a temporary directory and moved into place, so an interrupted
# build never leaves a binary that looks complete. Takes ~3 minutes.
$(MINIO_BIN):
	@echo "building MinIO server $(MINIO_VERSION) into $(dir $@) (once; takes a few minutes)"
	rm -rf $(dir $@).tmp
	GOBIN=$(abspath $(dir $@).tmp) GOFLAGS= $(GO) install github.com/minio/minio@$(MINIO_VERSION)
	mkdir -p $(dir $@)
	mv $(dir $@).tmp/minio $@
	rm -rf $(dir $@).tmp

# The real Kafka clients the interop tests run (cmd/tierlog/kafka_*_test.go):
# Debian's kcat (librdkafka) and python3-kafka (kafka-python, which only
# /usr/bin/python3 sees); and python3-nacl (Ed25519) for the independent
# proof verifier (cmd/tierlog/testdata/verify_proof.py). Installed when
# missing - apt-get update only if the install fails (package lists missing
# or stale) - and checked after, so a failed install stops here with the
# command that would fix it.
KAFKA_CLIENT_PKGS := kcat python3-kafka python3-nacl
KAFKA_CLIENTS_OK  := command -v kcat >/dev/null 2>&1 && /usr/bin/python3 -c 'import kafka, nacl' >/dev/null 2>&1

kafka-clients:
	@$(KAFKA_CLIENTS_OK) && exit 0; \
	echo "installing $(KAFKA_CLIENT_PKGS) (Debian packages) for the Kafka interop tests and the proof verifier"; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	install="$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(KAFKA_CLIENT_PKGS)"; \
	$$install >/dev/null 2>&1 || { $$SUDO apt-get update -qq && $$install >/dev/null; } && $(KAFKA_CLIENTS_OK) || { \
	  echo "could not install $(KAFKA_CLIENT_PKGS); the Kafka interop tests and the proof verifier need them: apt-get install -y $(KAFKA_CLIENT_PKGS)" >&2; exit 1; }

# iptables, with which the network partition test
# (cmd/tierlog/cluster_partition_e2e_test.go, run as root) cuts a node off
# on the loopback. Installed when missing, like the Kafka clients; the
# test fails, naming the package, without it.
FAULT_TOOLS_OK := command -v iptables >/dev/null 2>&1

fault-tools:
	@$(FAULT_TOOLS_OK) && exit 0; \
	echo "installing iptables (Debian package) for the network partition test"; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	install="$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables"; \
	$$install >/dev/null 2>&1 || { $$SUDO apt-get update -qq && $$install >/dev/null; } && $(FAULT_TOOLS_OK) || { \
	  echo "could not install iptables; the network partition test needs it: apt-get install -y iptables" >&2; exit 1; }

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^api/tierlogv1/')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff

# Short fuzz runs; `make fuzz-long FUZZTIME=10m` for a real session.
fuzz:
	$(GO) test -run=NONE -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) ./internal/batch
	$(GO) test -run=NONE -fuzz='^FuzzRecover$$' -fuzztime=$(FUZZTIME) ./hot
	$(GO) test -run=NONE -fuzz='^FuzzParseFooter$$' -fuzztime=$(FUZZTIME) ./cold
	$(GO) test -run=NONE -fuzz='^FuzzDecodeChunk$$' -fuzztime=$(FUZZTIME) ./cold
	$(GO) test -run=NONE -fuzz='^FuzzRequest$$' -fuzztime=$(FUZZTIME) ./api/kafka

fuzz-long:
	$(MAKE) fuzz FUZZTIME=10m

# Benchmarks print figures next to references measured in the same run.
bench: export TIERLOG_MINIO_BIN = $(MINIO_BIN)
bench: minio
	$(GO) test -run=NONE -bench=. -benchtime=3s ./hot ./internal/batch ./api/...

# The tiering benchmark of the README: TIER_BYTES of JSON audit events
# through upload, cold and warm replay against a local MinIO, each figure
# next to a reference from the same run. 1 GiB takes a few minutes; run it
# on an otherwise idle machine. Not part of test or bench.
TIER_BYTES ?= 1073741824
.PHONY: bench-tier
bench-tier: export TIERLOG_MINIO_BIN = $(MINIO_BIN)
bench-tier: minio
	$(GO) test -run=NONE -bench=BenchmarkTiering -benchtime=1x -timeout=60m ./tiering -tiering.bytes=$(TIER_BYTES)

# The cluster benchmark of the README: one node and three `tierlog serve`
# processes on loopback, produce figures at acks=1/all and leader SIGKILLs
# (about 2.5 minutes). Not part of test or bench.
.PHONY: bench-cluster
bench-cluster:
	$(GO) test ./cmd/tierlog -run '^$$' -bench Cluster -benchtime 1x -timeout 20m

# Regenerate api/tierlogv1 from api/proto (pinned buf and plugins, fetched
# through the Go module proxy).
proto:
	$(GO) generate ./api/...

# Validate docker-compose.yml with Debian's docker-compose (no engine needed).
compose-check:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  echo "installing docker-compose (Debian package) to validate docker-compose.yml"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }
	docker-compose -f docker-compose.yml config -q
	@echo "docker-compose.yml is valid"
