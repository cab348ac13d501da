# Read-only checks, then tests. `make fix` rewrites formatting.
.PHONY: verify test fix bench-compare bench-peers bench-cluster

verify:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo test --workspace

test:
	cargo test --workspace

fix:
	cargo fmt --all

bench-compare:
	cargo build --release --bin raftgate
	bench/compare.sh

bench-peers:
	cargo build --release
	RAFTGATE_CMD="exec $(CURDIR)/bench/start-raftgate.sh" bench/peers.sh

bench-cluster:
	cargo build --release --example cluster_bench
	cargo run --release --example cluster_bench -- all
