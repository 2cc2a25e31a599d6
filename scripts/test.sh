#!/usr/bin/env bash
# The test command: the layer check, formatting, lints, and every test (unit, parity, element, pipelines).
set -euo pipefail
cd "$(dirname "$0")/.."
# Layers (docs/ARCHITECTURE.md): no import from a lower layer to a higher one, no circle
# through files of different folders.
python3 scripts/check-layers.py
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Any GLib warning or critical during the tests is a failure.
G_DEBUG=fatal_warnings cargo test --all-targets
cargo test --doc
# The public API's documentation builds without broken or private links.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --quiet
