# Sourced by the bench scripts (quality.sh, figure.sh) from the repository root: sets `bin` (the
# turbovsr binary: TURBOVSR_BIN, else a release build), `peers` and `train` (the peers' and the
# trainer's Python), and writes the eval sets under runs/bench (kept and reused).
bin="${TURBOVSR_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin="${CARGO_TARGET_DIR:-target}/release/turbovsr"
fi
peers=$(scripts/bench/peers-env.sh)
train=$(scripts/training-env.sh)
PYTHONPATH="$PWD/training" "$train" -m turbovsr_train.data.benchsets \
  --wheels "$(dirname "$(dirname "$peers")")/wheels" --out runs/bench
