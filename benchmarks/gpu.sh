#!/bin/bash
# The GPU speed measurements in one command (about 8 minutes on an H200): benchmarks/throughput.py on the CIFAR
# ResNet-18 at batches 64 and 256 (the plain-PyTorch floor, the input pipeline, our SimCLR baseline, IE-CL and
# lightly's SimCLR), (1) in float32 with the phases of each step, (2) with bf16 + channels_last, (3) with bf16 +
# channels_last + torch.compile of the encoder; and the view pipelines alone (benchmarks/augmentation.py).
#
#   bash benchmarks/gpu.sh                          # on a GPU machine; DATA=path/to/cifar10 for a local copy
#   QUICK=1 bash benchmarks/gpu.sh                  # the same commands, tiny: a smoke test (runs on a CPU too)
#
# Each part is capped so one slow part cannot take the rest; the outputs land in $OUT (default outputs/gpu).
# Needs the `bench` extra (lightly) for lightly's rows.
set -u -o pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-outputs/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # iecl_hf from this checkout (benchmarks/ import it)
DATA="${DATA:-uoft-cs/cifar10}"  # a Hub id or a local folder (save_to_disk / parquet)

if [ -n "${QUICK:-}" ]; then  # a smoke test on the CPU: every command, tiny and short
    COMMON=(--preset cpu --dataset "$DATA" --batch_sizes 16 --steps 1 --repeats 1)
    LIMIT=300
else
    COMMON=(--preset cifar --dataset "$DATA" --batch_sizes 64 256 --steps 15 --repeats 3 --workers 4)
    LIMIT=170
fi

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
    python3 -c "import torch, transformers, timm, datasets; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'timm', timm.__version__, 'datasets', datasets.__version__)"
} 2>&1 | tee "$OUT/env.txt"

measure() {  # name, then extra flags
    local name=$1
    shift
    echo "== $name: $*" | tee "$OUT/throughput_$name.txt"
    timeout "$LIMIT" python3 benchmarks/throughput.py "${COMMON[@]}" "$@" 2>&1 | tee -a "$OUT/throughput_$name.txt"
    echo "exit $? (124: stopped at ${LIMIT}s)" | tee -a "$OUT/throughput_$name.txt"
}

# The view pipelines alone: ours (masked jitter on the GPU), its indexed execution, kornia if present, torchvision.
if [ -n "${QUICK:-}" ]; then VIEWS=(--batch_sizes 16 --repeats 1 --seconds 0.2); else VIEWS=(--seconds 1); fi
timeout "$LIMIT" python3 benchmarks/augmentation.py "${VIEWS[@]}" 2>&1 | tee "$OUT/augmentation.txt"

measure fp32 --breakdown  # + the phases of each step (loading, augmentation, forward, backward, optimizer)
measure bf16_channels_last --mixed_precision bf16 --channels_last
if [ -z "${QUICK:-}" ]; then  # compiling on the CPU takes minutes: the device run only
    measure bf16_channels_last_compile --mixed_precision bf16 --channels_last --torch_compile \
        --variants floor baseline iecl
fi
date -u | tee -a "$OUT/env.txt"
