#!/usr/bin/env bash
# Trains TurboVSR's denoiser with the PyTorch trainer (training/, `python -m turbovsr_train.train
# --help` lists its options): installs the trainer's environment if needed
# (scripts/training-env.sh), then launches it.
#
#   scripts/train.sh --out runs/small --vae models/default/vae \
#       --transformer training/configs/model/small.json --data data/wallpapers --steps 2000 \
#       --export runs/small-model
#
# TURBOVSR_LAUNCH picks the launch (default: gpu when nvidia-smi sees one, else cpu):
#   cpu, gpu, 8gpu-ddp, 8gpu-fsdp, multinode-fsdp   training/configs/accelerate/<name>.yaml
#   PATH.yaml                                        your own `accelerate config` file
#   cpu:N                                            N processes on the CPU (DDP over gloo,
#                                                    PyTorch's torchrun; what CI runs with N=2)
# Several nodes under Slurm: training/configs/slurm/train.sbatch.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python=$("$repo/scripts/training-env.sh")
bin="$(dirname "$python")"
export PYTHONPATH="$repo/training${PYTHONPATH:+:$PYTHONPATH}"
launch="${TURBOVSR_LAUNCH:-auto}"
if [ "$launch" = auto ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then launch=gpu; else launch=cpu; fi
fi
case "$launch" in
  cpu:*)
    n="${launch#cpu:}"
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "train.sh: TURBOVSR_LAUNCH=$launch: expected cpu:N" >&2; exit 2; }
    ACCELERATE_USE_CPU=true exec "$bin/torchrun" --standalone --nproc_per_node "$n" \
      -m turbovsr_train.train "$@" ;;
  *.yaml) config="$launch" ;;
  *) config="$repo/training/configs/accelerate/$launch.yaml" ;;
esac
[ -f "$config" ] || { echo "train.sh: no accelerate config $config (TURBOVSR_LAUNCH=$launch)" >&2; exit 2; }
exec "$bin/accelerate" launch --config_file "$config" -m turbovsr_train.train "$@"
