#!/usr/bin/env bash
# The CPU-scale study: Supervised vs FixMatch vs FixMatch + DASO on the offline CIFAR-10-LT copy,
# consistent (cifar10_lt_n1500_cpu) and reversed (cifar10_lt_n1500_reversed_cpu) unlabeled sets.
#
#   unzip -q ../shared/datasets/cifar10_jpeg.zip -d data/cifar10_jpeg
#   bash docs/studies/cifar10_lt_cpu/run_study.sh [SEED ...]      (default: 0; from the repo root)
#
# Every run is exactly
#   python run.py --experiment=<setting>_cpu --model_dir=$RUNS/<setting>/<learner>_seed<k> \
#       --params_override=algorithm.name=<learner>,data.seed=<k>,data.data_dir=$DATA
# Re-running the script resumes unfinished runs and skips finished ones (run.py resumes).
# STUDY_JOBS runs that many at once (2 on a 2-core machine shared with other work).
# Each finished run's results.json and params.yaml are copied to
# docs/studies/cifar10_lt_cpu/<setting>/<learner>_seed<k>/, and each setting's report to
# docs/studies/cifar10_lt_cpu/<setting>/report/.
set -euo pipefail
cd "$(dirname "$0")/../../.."
STUDY=docs/studies/cifar10_lt_cpu
export STUDY RUNS=${STUDY_RUNS:-runs/study_cifar10_lt_cpu} DATA=${STUDY_DATA:-data/cifar10_jpeg}
SEEDS=${*:-0}

run_one() {
  local setting=$1 learner=$2 seed=$3
  local model_dir=$RUNS/$setting/${learner}_seed$seed out=$STUDY/$setting/${learner}_seed$seed
  mkdir -p "$(dirname "$model_dir")" "$out"
  python run.py --experiment="${setting}_cpu" --model_dir="$model_dir" \
    --params_override="algorithm.name=$learner,data.seed=$seed,data.data_dir=$DATA" > "$model_dir.log" 2>&1
  cp "$model_dir/results.json" "$model_dir/params.yaml" "$out/"
  echo "done: $setting $learner seed $seed"
}
export -f run_one

# Supervised trains on the labeled set only, which both settings share (same seed, same split):
# it runs once, under cifar10_lt_n1500, and is the floor of both.
for seed in $SEEDS; do
  for setting in cifar10_lt_n1500 cifar10_lt_n1500_reversed; do
    for learner in fixmatch daso; do echo "$setting $learner $seed"; done
  done
  echo "cifar10_lt_n1500 supervised $seed"
done | xargs -P "${STUDY_JOBS:-1}" -L 1 bash -c 'run_one "$@"' _

for setting in cifar10_lt_n1500 cifar10_lt_n1500_reversed; do
  python -m daso_tf.tools.report "$STUDY"/cifar10_lt_n1500/supervised_seed* "$STUDY/$setting"/fixmatch_seed* \
    "$STUDY/$setting"/daso_seed* --out "$STUDY/$setting/report"
done
python "$STUDY/summarize.py"   # the README table
