#!/usr/bin/env bash
# One lent-GPU call for a batch plan (benchmarks/gpu/batch.py), prepared here and run there.
#
#   STAGE_WHEELS=path/to/stage-wheels benchmarks/gpu/session.sh prepare ml-1m beauty
#                                        # here: prepared caches + wheels into .gpu/ (git-ignored)
#   benchmarks/gpu/session.sh run paper-table2 480   # there (the device's command, carry [".gpu"]): plan, budget s
#
# "prepare" copies each dataset's prepared arrays (not its sampled negatives: the GPU machine
# draws those itself, they are tens of MB) from the cache to .gpu/cache and stages the wheels
# the GPU image lacks (mlflow-skinny, optuna) in .gpu/.whl with $STAGE_WHEELS, the lending
# workplace's script that knows what its image has (it writes ./.whl). A dataset's cache is found through
# $RECBOARD_CACHE (or ~/.cache/recboard); one not prepared yet needs its data env var. "run" installs them, runs the plan
# from the repository without installing it, and copies the archives and the merged
# leaderboard to $OUT. Back here, first of all: `tar xzf records.tar.gz -C leaderboard/`,
# `bench leaderboard --out leaderboard/LEADERBOARD.md`, commit. Unpack the archives at /tmp/recboard-batch here: MLflow recorded the
# runs' artifact paths there.
set -euo pipefail
mode=${1:?usage: session.sh prepare DATASET... | run PLAN [BUDGET_S]}
shift
case "$mode" in
prepare)
  cache=${RECBOARD_CACHE:-$HOME/.cache/recboard}
  mkdir -p .gpu/cache
  for dataset in "$@"; do
    bench prepare --dataset "$dataset" > /dev/null    # builds the cache if it is missing
    for folder in "$cache/$dataset"-*/; do
      target=.gpu/cache/$(basename "$folder")
      mkdir -p "$target" && cp "$folder"/arrays.npz "$folder"/meta.json "$target"/
    done
  done
  # into .gpu/.whl; pip's warnings about the local indexes it skips are noise
  stage=${STAGE_WHEELS:?set STAGE_WHEELS to the stage-wheels script of the workplace lending the GPU}
  (cd .gpu && "$stage" > stage-wheels.log 2>&1) || { cat .gpu/stage-wheels.log; exit 1; }
  du -sh .gpu/cache .gpu/.whl
  ;;
run)
  plan=${1:?a plan of benchmarks/gpu/batch.py}; budget=${2:-480}
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/.whl/*.whl
  mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/recboard
  export PYTHONPATH=/tmp/pkg:/tmp/site RECBOARD_CACHE=$PWD/.gpu/cache PYTHONUNBUFFERED=1
  python3 -m recboard.benchmarks.gpu.batch "$plan" --out /tmp/recboard-batch --budget "$budget" \
    | tee "${OUT:-/tmp}/batch.log" || true
  cp /tmp/recboard-batch/batch.tar.gz /tmp/recboard-batch/examples.tar.gz /tmp/recboard-batch/records.tar.gz \
     /tmp/recboard-batch/LEADERBOARD.md \
     "${OUT:-/tmp}/" 2>/dev/null || true
  ;;
*)
  echo "session.sh: unknown mode $mode (prepare | run)" >&2; exit 2 ;;
esac
