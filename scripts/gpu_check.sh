#!/usr/bin/env bash
# The prepared GPU check: on a machine with a CUDA GPU, the benchmark of every pretraining method in every
# precision the GPU runs (32-true, 16-mixed, bf16-mixed where supported), with and without --compile, then one
# short epoch of every stage (each method's pretraining, the linear probe, finetuning, the baseline), and one
# table of it all. About 6 minutes on one H100-class GPU (torch.compile's first compilation of each precision
# takes most of it; later methods reuse its cache).
#
#   bash scripts/gpu_check.sh                                # real data from ../shared/data/medmnist if there
#   DATA_DIR=~/.medmnist bash scripts/gpu_check.sh          # else generated data in MedMNIST's format
#   OUT=gpu-check bash scripts/gpu_check.sh                 # keep the JSON and logs in gpu-check/
#
# Settings (environment): METHODS ("simclr moco byol"), PRECISIONS (all the GPU supports), COMPILE ("0 1"),
# STAGES ("pretrain probe finetune baseline"), DATASET (bloodmnist), SIZE (28), BATCH (256), STEPS (40),
# WARMUP (5; compilation happens there), ACCELERATOR (cuda; cpu runs the same plumbing for the tests).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
ACCELERATOR="${ACCELERATOR:-cuda}"
METHODS="${METHODS:-simclr moco byol}"
COMPILE="${COMPILE:-0 1}"
STAGES="${STAGES:-pretrain probe finetune baseline}"
DATASET="${DATASET:-bloodmnist}"
SIZE="${SIZE:-28}"
BATCH="${BATCH:-256}"
STEPS="${STEPS:-40}"
WARMUP="${WARMUP:-5}"
OUT="${OUT:-$(mktemp -d -t gpu-check-XXXXXX)}"
mkdir -p "$OUT/bench" "$OUT/logs"
export MEDSIMCLR_OUTPUT_ROOT="$OUT/runs"  # the stages' checkpoints: never the repository's models/ folders

if [[ "$ACCELERATOR" == "cuda" ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "error: no CUDA GPU visible to torch (torch.cuda.is_available() is False); this check needs one" >&2
    exit 2
fi
if [[ -z "${PRECISIONS:-}" ]]; then
    if [[ "$ACCELERATOR" == "cuda" ]]; then
        PRECISIONS=$("$PYTHON" -c "import torch; print('32-true 16-mixed' + (' bf16-mixed' if torch.cuda.is_bf16_supported() else ''))")
    else
        PRECISIONS="32-true"
    fi
fi

# the data: a real npz when there is one, else a generated one of the real split sizes
DATA_DIR="${DATA_DIR:-../shared/data/medmnist}"
npz="$DATASET.npz"; [[ "$SIZE" != 28 ]] && npz="${DATASET}_$SIZE.npz"
if [[ ! -f "$DATA_DIR/$npz" ]]; then
    DATA_DIR="$OUT/data"
    mkdir -p "$DATA_DIR"
    echo "no $npz found: generating one in $DATA_DIR"
    "$PYTHON" -c "from common.data.synthetic import write_synthetic; write_synthetic('$DATA_DIR', '$DATASET', $SIZE)"
fi

"$PYTHON" - <<EOF
import torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"gpu check: torch {torch.__version__}, {name}, data {'$DATA_DIR'}/$npz, results in $OUT")
EOF
start=$SECONDS
for method in $METHODS; do
    for precision in $PRECISIONS; do
        for compiled in $COMPILE; do
            tag="$method-$precision-compile$compiled"
            flags=(); [[ "$compiled" == 1 ]] && flags+=(--compile)
            echo "[$((SECONDS - start)) s] benchmark $tag"
            "$PYTHON" scripts/benchmark.py --method "$method" --dataset "$DATASET" --size "$SIZE" --data-dir "$DATA_DIR" \
                --accelerator "$ACCELERATOR" --precision "$precision" "${flags[@]}" --batch-size "$BATCH" \
                --steps "$STEPS" --warmup "$WARMUP" --skip monitor augment logreg --json "$OUT/bench/$tag.json" \
                > "$OUT/logs/bench-$tag.log" 2>&1 || echo "  FAILED: see $OUT/logs/bench-$tag.log"
        done
    done
done

common=(--dataset "$DATASET" --size "$SIZE" --data-dir "$DATA_DIR" --accelerator "$ACCELERATOR" --devices 1 --epochs 1)
stage() {  # name, command...: one short run, its wall time and exit status in the table
    local name=$1; shift
    echo "[$((SECONDS - start)) s] stage $name"
    local t0=$SECONDS
    "$PYTHON" "$@" > "$OUT/logs/stage-$name.log" 2>&1
    local status=$?
    echo "$name $status $((SECONDS - t0))" >> "$OUT/stages.txt"
}
: > "$OUT/stages.txt"
for what in $STAGES; do
    case "$what" in
        pretrain) for method in $METHODS; do
                      stage "pretrain-$method" pretrain/$method/train.py "${common[@]}" --name "check-$method" --overwrite
                  done ;;
        probe) stage probe downstream/logistic_regression/train.py "${common[@]}" --encoder "check-${METHODS%% *}" \
                   --name check-probe --overwrite ;;
        finetune) stage finetune downstream/resnet/train.py "${common[@]}" --init "check-${METHODS%% *}" \
                      --name check-finetune --overwrite ;;
        baseline) stage baseline downstream/resnet/train.py "${common[@]}" --init none --name check-baseline --overwrite ;;
        *) echo "error: unknown stage '$what' in STAGES (pretrain probe finetune baseline)" >&2; exit 2 ;;
    esac
done

"$PYTHON" - "$OUT" "$((SECONDS - start))" <<'EOF'
import json, sys
from pathlib import Path

out, seconds = Path(sys.argv[1]), int(sys.argv[2])
rows = [("method", "precision", "compile", "compute-only img/s", "real img/s", "real/compute", "peak GPU MB", "fit s")]
for path in sorted((out / "bench").glob("*.json")):
    r = json.loads(path.read_text())
    s, compute, real = r["settings"], r.get("compute", {}), r.get("pretrain", {})
    gpu = r.get("memory", {}).get("cuda_peak_mb")
    rows.append((s["method"], s["precision"], "yes" if s["compile"] else "no", f"{compute.get('images_per_s', 0):,.0f}",
                 f"{real.get('images_per_s', 0):,.0f}", f"{real.get('ratio_to_compute', float('nan')):.3f}",
                 f"{gpu:,.0f}" if gpu else "n/a", f"{real.get('fit_seconds', 0):.0f}"))
failed = sorted(p.stem[len("bench-"):] for p in (out / "logs").glob("bench-*.log")
                if not (out / "bench" / f"{p.stem[len('bench-'):]}.json").exists())
widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
print()
for i, row in enumerate(rows):
    print("  ".join(cell.rjust(w) if i and j > 2 else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths))))
    if i == 0:
        print("  ".join("-" * w for w in widths))
for tag in failed:
    print(f"FAILED benchmark {tag}: see {out}/logs/bench-{tag}.log")
print()
stages = [line.split() for line in (out / "stages.txt").read_text().splitlines() if line.strip()]
for name, status, wall in stages:
    print(f"stage {name:<20} {'ok' if status == '0' else 'FAILED (exit ' + status + ')':<16} {wall:>5} s"
          + ("" if status == "0" else f"   see {out}/logs/stage-{name}.log"))
print(f"\ntotal {seconds} s; JSON and logs in {out}")
sys.exit(1 if failed or any(status != "0" for _, status, _ in stages) else 0)
EOF
