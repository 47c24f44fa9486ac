#!/usr/bin/env bash
# The `make demo` run: builtin:shapes -> a 64x64 zip -> a short FastGAN + DiffAugment training
# run on the CPU (reconstruction loss: mse, so no detector file is needed) -> images generated
# from its last snapshot, and an SLE style-mixing grid.
#
# Expects the environment to exist already (make sets up .venv first).
# Knobs (environment): DEMO_PYTHON (default .venv/bin/python), DEMO_OUTDIR (default
# runs/demo), DEMO_KIMG (default 1.5), DEMO_THREADS (CPU threads, default 1: on a small shared
# machine one thread per process is faster than two fighting).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${DEMO_PYTHON:-$ROOT/.venv/bin/python}"
OUT="${DEMO_OUTDIR:-$ROOT/runs/demo}"
KIMG="${DEMO_KIMG:-1.5}"
export OMP_NUM_THREADS="${DEMO_THREADS:-1}"
export MKL_NUM_THREADS="$OMP_NUM_THREADS"

if [ ! -x "$PY" ]; then
    echo "demo: $PY not found; run 'make demo' (it creates .venv) or set DEMO_PYTHON=/path/to/python" >&2
    exit 1
fi
mkdir -p "$OUT"
case "$OUT" in /*) ;; *) OUT="$(cd "$OUT" && pwd)" ;; esac
cd "$ROOT/stylegan2_ada"
START=$(date +%s)

# 1. Data: the built-in procedurally drawn few-shot set (100 images, 5 labelled classes) as a 64x64 zip
#    (FastGAN's smallest size).
DATA="$OUT/shapes-64.zip"
if [ -f "$DATA" ]; then
    echo "== 1/3 Data: reusing $DATA"
else
    echo "== 1/3 Data: drawing builtin:shapes into $DATA"
    "$PY" dataset_tool.py --source=builtin:shapes --dest="$DATA" --resolution=64
fi

# 2. Training: FastGAN with DiffAugment (color, translation, cutout) and D's reconstruction loss
#    (--recon=mse; the official lpips needs NVIDIA's vgg16.pt). Narrow networks (--ngf/--ndf 8
#    instead of 64) so that the CPU gets through a few hundred iterations in minutes, and a short
#    G_ema half-life (--ema, kimg) so that a run this short already shows in the snapshot
#    (FastGAN's own EMA, 0.999 per step, would still be mostly the initial network).
echo
echo "== 2/3 Training FastGAN + DiffAugment for $KIMG kimg on the CPU (progress: one line per 0.25 kimg)"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
"$PY" train.py --outdir="$OUT" --data="$DATA" --device=cpu --gpus=1 --metrics=none \
    --cfg=fastgan --aug=diffaug --recon=mse --ngf=8 --ndf=8 --batch=8 --ema=0.25 \
    --kimg="$KIMG" --tick=0.25 --snap=2 --mirror=1 --workers=0 --seed=0 2>&1 | tee "$LOG"
RUN="$(sed -n 's/^Output directory: *//p' "$LOG" | head -n 1)"
if [ -z "$RUN" ] || [ ! -d "$RUN" ]; then
    echo "demo: could not find the run folder in train.py's output" >&2
    exit 1
fi
SNAP="$(ls "$RUN"/network-snapshot-*.pkl | sort | tail -n 1)"

# 3. Use the snapshot: a few seeds with generate.py, and a style-mixing grid (FastGAN mixes through
#    its SLE modules: style index 1 takes the columns' appearance, the rows keep their layout).
echo
echo "== 3/3 Generating images from $(basename "$SNAP")"
"$PY" generate.py --network="$SNAP" --seeds=0-7 --outdir="$RUN/generated"
"$PY" style_mixing.py --network="$SNAP" --rows=0-3 --cols=10-13 --styles=1 --outdir="$RUN/style-mixing"

END=$(date +%s)
echo
echo "== Demo finished in $((END - START)) s. Everything is in $RUN:"
row() { printf '   %-44s %s\n' "$1" "$2"; }
row "log.txt, training_options.json, stats.jsonl" "options, console log, per-tick statistics (Loss/D/recon_*)"
row "reals.png" "training images"
row "fakes_init.png, fakes*.png" "generator samples at the start and every 0.5 kimg"
row "$(basename "$SNAP")" "last snapshot (G, D, G_ema, augment pipe; .ckpt.pt resumes exactly)"
row "generated/seed000*.png" "generate.py --seeds=0-7"
row "style-mixing/grid.png" "style_mixing.py --rows=0-3 --cols=10-13 --styles=1"
