#!/bin/bash
# The GPU measurements of issue 11 in one device call (about 8 minutes on the H200), prepared so that a session that
# is lent a device spends its 15 minutes measuring, not setting up.
#
#   bash benchmarks/device_session.sh --prepare     # here, once, no device time: wheels + data into ignored folders
#   QUICK=1 bash benchmarks/device_session.sh       # here, on the CPU: the same commands, tiny (a smoke test)
#   run(command="bash benchmarks/device_session.sh", carry=[".whl", ".data"], timeout_s=600)    # the device call
#
# What it measures (benchmarks/throughput.py, CIFAR ResNet-18, batches 64 and 256): the floor, the input pipeline,
# our SimCLR baseline, IE-CL and lightly's SimCLR, (1) in float32, (2) with bf16 + channels_last, (3) with
# bf16 + channels_last + torch.compile of the encoder; in float32 also the phases of each step (--breakdown); and
# the view pipelines alone (benchmarks/augmentation.py: the colour jitter masked and indexed). Each
# run is capped so one slow part cannot take the rest; the outputs land in $OUT (the device tool brings them back)
# or outputs/device here.
set -u -o pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    for folder in /.whl/ /.data/; do
        grep -qxF "$folder" .git/info/exclude 2>/dev/null || echo "$folder" >> .git/info/exclude
    done
    # Not in the H200 image (its package list: /work/.library/device/KINDS.md): datasets and its own needs, lightly.
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "datasets==5.2.0" "dill==0.4.1" "multiprocess==0.70.19" "lightly==1.6.0" "hydra-core==1.3.8" \
        "omegaconf==2.3.1" || exit 1
    python3 -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3" || exit 1  # an sdist only: built here
    mkdir -p .data && cp -r ../shared/data/cifar10-small .data/ || exit 1
    du -sh .whl .data
    exit 0
fi

OUT="${OUT:-outputs/device}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # iecl_hf from this checkout (benchmarks/ import it)
if [ -d .whl ] && ! python3 -c "import datasets, lightly" 2>/dev/null; then  # the device: carried wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PWD" || exit 1
fi
DATA=.data/cifar10-small
[ -d "$DATA" ] || DATA=../shared/data/cifar10-small

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
