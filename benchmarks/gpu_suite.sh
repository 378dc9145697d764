#!/usr/bin/env bash
# The GPU suite on a machine with no network, in two steps (from the repository's root):
#
#   bash benchmarks/gpu_suite.sh pack   # here, with the registry and the data at hand
#   bash benchmarks/gpu_suite.sh run    # there, after copying the checkout with gpu-carry/
#
# pack fills gpu-carry/ (about 14 MiB; ignored by git) with what the GPU machine lacks:
#   wheels/              the packages medharness needs beyond torch, transformers, peft,
#                        accelerate and the scientific stack such a machine has (pydantic,
#                        datasets, trl and their own missing needs), at the versions
#                        installed here, built for CPython $GPU_PYTHON on x86-64 Linux;
#                        setuptools, to build medharness's C extension there
#   data.tar.xz          the data the suite reads, from $MEDHARNESS_DATA_DIR: MedQuAD's
#                        XML (the test split's questions, the train split's pairs) and
#                        MedQA's US 4-option test file
#   smollm2-135m-instruct/  the built-in model's config and tokenizer, without its weights
# and prints its size.
#
# run installs the wheels (pip, --no-index), installs medharness from the checkout, unpacks
# the data, and runs benchmarks/gpu_suite.py within $SUITE_BUDGET_S seconds (each part
# under its own budget, skipped with the reason once the budget is spent), writing
# $OUT/gpu_suite.json ($OUT defaults to the current folder) and pip's log beside it. The
# whole stays under 10 minutes: the suite takes at most $SUITE_BUDGET_S seconds, a hard stop
# at $HARD_STOP_S ends one that overruns (the JSON then holds the parts finished), and the
# installs (ten small wheels and medharness's C extension) should take well under a minute.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=${CARRY:-gpu-carry}
GPU_PYTHON=${GPU_PYTHON:-3.12}
SUITE_BUDGET_S=${SUITE_BUDGET_S:-420}
HARD_STOP_S=${HARD_STOP_S:-450}
# the project's environment where there is one (pack), else the machine's python3 (run)
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
# What medharness imports that such a machine lacks; their own needs that it lacks too.
PACKAGES="pydantic pydantic_core annotated-types typing-inspection typing_extensions
  datasets dill multiprocess trl setuptools"

pack() {
  set -e
  rm -rf "$CARRY" && mkdir -p "$CARRY/wheels"
  # the versions installed here, the ones medharness is tested with
  pins=$($PYTHON -c 'import importlib.metadata as m, sys
print(" ".join(f"{p}=={m.version(p)}" for p in sys.argv[1:]))' $PACKAGES)
  $PYTHON -m pip download --quiet --no-deps --only-binary=:all: --dest "$CARRY/wheels" \
    --python-version "$GPU_PYTHON" --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 $pins
  data=${MEDHARNESS_DATA_DIR:?set MEDHARNESS_DATA_DIR to the data root}
  tar -C "$data" -cJf "$CARRY/data.tar.xz" --exclude='*.zip' \
    $(cd "$data" && ls -d medquad/[0-9]*_*) medquad/LICENSE.txt medqa/us_4opt_test.jsonl \
    medqa/LICENSE
  builtin=$($PYTHON -c 'from medharness.models.builtin import builtin_model_dir as d
print(d())')
  mkdir -p "$CARRY/smollm2-135m-instruct"
  find "$builtin" -maxdepth 1 -type f ! -name '*.safetensors' \
    -exec cp {} "$CARRY/smollm2-135m-instruct/" \;
  du -sh "$CARRY"/* "$CARRY"
}

run() {
  out=${OUT:-.}
  mkdir -p "$out"
  log="$out/gpu_suite_install.log"
  # setuptools first: medharness's build (no isolation, no index) uses the installed one,
  # and its C extension needs 74.1 or later
  $PYTHON -m pip install --no-index --find-links "$CARRY/wheels" "setuptools>=74.1" >"$log" 2>&1
  $PYTHON -m pip install --no-index --find-links "$CARRY/wheels" $PACKAGES >>"$log" 2>&1 \
    || { echo "pip could not resolve the wheels against this machine's packages; installing" \
           "them without their dependencies" | tee -a "$log"
         $PYTHON -m pip install --no-index --no-deps "$CARRY"/wheels/*.whl >>"$log" 2>&1; }
  $PYTHON -m pip install --no-index --no-deps --no-build-isolation . >>"$log" 2>&1 \
    || echo "medharness did not install (see $log); the suite records why each part fails"
  data=$(mktemp -d)
  tar -C "$data" -xJf "$CARRY/data.tar.xz"
  MEDHARNESS_DATA_DIR=$data PYTHONUNBUFFERED=1 timeout "$HARD_STOP_S" \
    $PYTHON benchmarks/gpu_suite.py --model-shape "$CARRY/smollm2-135m-instruct" \
    --budget-s "$SUITE_BUDGET_S" --out "$out/gpu_suite.json"
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: bash benchmarks/gpu_suite.sh pack|run" >&2; exit 2 ;;
esac
