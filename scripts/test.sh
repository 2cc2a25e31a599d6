#!/usr/bin/env bash
# The test command: formatting, lints, and every test (unit, parity, element, pipelines).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Any GLib warning or critical during the tests is a failure.
G_DEBUG=fatal_warnings cargo test --all-targets
cargo test --doc
