#!/usr/bin/env bash
# Upscales one video on a Slurm cluster: `turbovsr plan` here, then an array job of one task per
# segment (turbovsr-segments.sbatch, the range read from plan.json), then the join
# (turbovsr-join.sbatch) once every task has succeeded (--dependency=afterok). WORKDIR must be on a
# filesystem every node mounts. Prints the two job ids. TURBOVSR_BIN names the binary (default:
# turbovsr on PATH; sbatch exports the environment to the jobs), TURBOVSR_JOIN_ENCODER the
# result's video encoder (turbovsr join --encoder, a gst-launch description; default: join's);
# SBATCH_* variables set sbatch's options as usual (SBATCH_PARTITION, SBATCH_ACCOUNT, ...).
#
#   farm/slurm/submit.sh INPUT WORKDIR OUTPUT [--segments N | --segment-seconds S] [--context F] \
#       [-- UPSCALE_ARGS...]
#   farm/slurm/submit.sh clip.mkv /shared/work/clip /shared/out/clip.mkv --segments 16 -- --device cuda
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -ge 3 ] || { sed -n '2,13s/^# \{0,1\}//p' "$0" >&2; exit 2; }
input=$(realpath "$1")
workdir=$(realpath -m "$2")
output=$(realpath -m "$3")
shift 3
turbovsr="${TURBOVSR_BIN:-turbovsr}"
"$turbovsr" plan "$input" "$workdir" "$@" >&2
plan="$workdir/plan.json"
segments=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["segments"]))' "$plan")
[ "$segments" -ge 1 ] || { echo "submit: $plan has no segments" >&2; exit 1; }
array=$(sbatch --parsable --array="0-$((segments - 1))" "$here/turbovsr-segments.sbatch" "$plan")
array=${array%%;*}
join_options=()
[ -z "${TURBOVSR_JOIN_ENCODER:-}" ] || join_options=(--encoder "$TURBOVSR_JOIN_ENCODER")
join=$(sbatch --parsable --dependency="afterok:$array" "$here/turbovsr-join.sbatch" "$plan" "$output" \
  "${join_options[@]}")
join=${join%%;*}
echo "submit: $segments segments: array job $array, join job $join -> $output" >&2
echo "$array $join"
