#!/usr/bin/env bash
# demo.sh: the main job on the embedded defaults. Installs what is missing (scripts/setup.sh),
# builds `gantry` (build dir: build), turns Debian's fortune cookies into a byte-level text
# corpus, trains a small GPT on it for a couple of minutes (progress bar, loss falling), and
# prints a greedy sample from the trained model.
#   bash scripts/demo.sh                 # the whole thing
#   DEMO_STEPS=200 bash scripts/demo.sh  # shorter run; DEMO_THREADS=N sets CPU threads
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*" >&2; }

if ! bash scripts/setup.sh --check > /dev/null 2>&1; then
  step "installing missing packages (scripts/setup.sh)"
  bash scripts/setup.sh
fi

step "building gantry (build/)"
cmake -S . -B build -G Ninja ${GANTRY_CMAKE_ARGS:-} > /dev/null
cmake --build build --target gantry -j "$(nproc)" | tail -n 1

corpus=.gantry/data/fortunes.txt
if [[ ! -s $corpus ]]; then
  step "building the corpus: /usr/share/games/fortunes/* -> $corpus"
  mkdir -p .gantry/data
  # The text files only: *.dat are strfile indexes, *.u8 links to the same text.
  find /usr/share/games/fortunes -maxdepth 1 \( -type f -o -type l \) \
    ! -name '*.dat' ! -name '*.u8' -print0 | sort -z | xargs -0 cat > "$corpus.tmp"
  mv "$corpus.tmp" "$corpus"
fi
echo "corpus: $(wc -c < "$corpus") bytes (one token per byte)" >&2

ckpt=.gantry/ckpt/gpt-fortunes
rm -rf "$ckpt"  # the demo always trains from scratch
args=(train examples/gpt-fortunes.yaml --checkpoint-dir "$ckpt" --progress bar)
[[ -n ${DEMO_STEPS:-} ]] && args+=(--steps "$DEMO_STEPS")
[[ -n ${DEMO_THREADS:-} ]] && args+=(--threads "$DEMO_THREADS")
step "training a byte-level GPT on the fortunes (gantry ${args[*]})"
build/cli/gantry "${args[@]}"

step "greedy sample from $ckpt"
build/cli/gantry sample "$ckpt" --prompt "You will " --tokens 300
