#!/usr/bin/env bash
# The `make demo` run: builtin:shapes -> a 32x32 zip -> a short class-conditional FastGAN training
# run on the CPU (reconstruction loss: mse, so no detector file is needed) -> images generated
# from its last snapshot, and a score: the share of generated images that a small shapes
# classifier (stylegan2_ada/training/shapes_classifier.py, trained once on freshly drawn scenes
# and cached) calls a shape with p >= 0.9, beside the same share for the 100 training images.
#
# Expects the environment to exist already (make sets up .venv first).
# Knobs (environment): DEMO_PYTHON (default .venv/bin/python), DEMO_OUTDIR (default
# runs/demo), DEMO_KIMG (default DEMO_KIMG_DEFAULT below), DEMO_THREADS (CPU threads of each step,
# default 2: the steps run one after another, so each may use both cores).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${DEMO_PYTHON:-$ROOT/.venv/bin/python}"
OUT="${DEMO_OUTDIR:-$ROOT/runs/demo}"
DEMO_KIMG_DEFAULT=32
KIMG="${DEMO_KIMG:-$DEMO_KIMG_DEFAULT}"
export OMP_NUM_THREADS="${DEMO_THREADS:-2}"
export MKL_NUM_THREADS="$OMP_NUM_THREADS"

if [ ! -x "$PY" ]; then
    echo "demo: $PY not found; run 'make demo' (it creates .venv) or set DEMO_PYTHON=/path/to/python" >&2
    exit 1
fi
mkdir -p "$OUT"
case "$OUT" in /*) ;; *) OUT="$(cd "$OUT" && pwd)" ;; esac
cd "$ROOT/stylegan2_ada"
START=$(date +%s)

# 1. Data: the built-in procedurally drawn few-shot set (100 images, 5 labelled classes) as a 32x32 zip
#    (FastGAN's smallest size: a quarter of the pixels of 64x64, and the shapes still read clearly).
DATA="$OUT/shapes-32.zip"
if [ -f "$DATA" ]; then
    echo "== 1/3 Data: reusing $DATA"
else
    echo "== 1/3 Data: drawing builtin:shapes into $DATA"
    "$PY" dataset_tool.py --source=builtin:shapes --dest="$DATA" --resolution=32
fi

# 2. Training: FastGAN conditioned on the set's 5 shape labels (--cond=1: class-conditional batch
#    norm in G, a projection term in D), with DiffAugment (the cfg's policy: colour and translation)
#    and without D's reconstruction term (--recon=none: 10-15 % less time per kimg, shapes as
#    early). Narrow networks (--ngf=8 --ndf=6 instead of 64; D's decoders narrow with them) at
#    batch 64, lr 2e-3. Measured (2026-12-08, docs/benchmarks.md "demo trials, fourth round"):
#    the shapes classifier's confident share of this generator rises from about 6 % at 24 kimg to
#    24 % at 28 and 54 % at 32 kimg, when all five shapes are drawn; before about 20 kimg any
#    recipe tried gives blobs. No --ema: the cfg's G_ema ramp-up (--ema-rampup 0.05) keeps the
#    half-life at 0.05 x the images seen, so the last snapshot shows the last kimg, not the first.
echo
echo "== 2/3 Training a class-conditional FastGAN for $KIMG kimg on the CPU (progress: one line per 4 kimg)"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
"$PY" train.py --outdir="$OUT" --data="$DATA" --device=cpu --gpus=1 --metrics=none \
    --cfg=fastgan --cond=1 --aug=diffaug --recon=none --ngf=8 --ndf=6 --batch=64 --lr=0.002 \
    --kimg="$KIMG" --tick=4 --snap=1 --mirror=1 --workers=0 --seed=0 2>&1 | tee "$LOG"
RUN="$(sed -n 's/^Output directory: *//p' "$LOG" | head -n 1)"
if [ -z "$RUN" ] || [ ! -d "$RUN" ]; then
    echo "demo: could not find the run folder in train.py's output" >&2
    exit 1
fi
SNAP="$(ls "$RUN"/network-snapshot-*.pkl | LC_ALL=C sort | tail -n 1)"   # names sort in training order

# 3. Use the snapshot: a few seeds with generate.py, then the score and the final grid. The scoring
#    classifier is trained on first use (about 40 s of two cores) and then cached under dnnlib's cache
#    directory; here, after the GAN, it has both cores (beside the GAN it slowed the GAN's training more
#    than its own minute costs).
echo
echo "== 3/3 Generating images from $(basename "$SNAP") and scoring them"
"$PY" generate.py --network="$SNAP" --seeds=0-7 --class=0 --outdir="$RUN/generated"   # class 0: circle
"$PY" "$ROOT/scripts/demo_score.py" --network="$SNAP" --data="$DATA" --num=256 --grid="$RUN/final-grid.png" \
    --json="$RUN/score.json"

END=$(date +%s)
echo
echo "== Demo finished in $((END - START)) s. Everything is in $RUN:"
row() { printf '   %-44s %s\n' "$1" "$2"; }
row "log.txt, training_options.json, stats.jsonl" "options, console log, per-tick statistics (Loss/D/recon_*)"
row "reals.png" "training images"
row "fakes_init.png, fakes*.png" "generator samples at the start and every 4 kimg"
row "$(basename "$SNAP")" "last snapshot (G, D, G_ema, augment pipe; .ckpt.pt resumes exactly)"
row "generated/seed000*.png" "generate.py --seeds=0-7 --class=0 (circles)"
row "final-grid.png, score.json" "64 generated images (classes in turn); classifier shares (generated, real)"
