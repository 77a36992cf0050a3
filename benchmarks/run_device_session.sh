#!/usr/bin/env bash
# The measurements docs/benchmarks.md and docs/results.md quote from a lent GPU machine (1 GPU, 16 cores),
# in one session: phase "start" (GPU tables, strong.yaml at VOC scale, and the equal-time CPU runs
# launched in the background, each pinned to its own 2 cores) and phase "collect" (waits, copies results).
# Usage there: bash benchmarks/run_device_session.sh start|collect   (results under $OUT); WAIT=1 ... start
# does both in one call (BUDGET=7m fits the 10-minute limit of one call).
set -u
export PYTHONPATH=$PWD/src MPLBACKEND=Agg VOCSEG_CACHE=/tmp/vocseg-cache
RES=/tmp/vocseg-results
BUDGET=${BUDGET:-10m}
if [ "$1" = start ]; then
  mkdir -p $RES
  python3 -m pip install -q --no-deps --no-index .bench-wheels/segmentation_models_pytorch-*.whl
  python3 -c "import torch, torchvision; print('torch', torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv; lscpu | grep -E 'Model name|^CPU\(s\)|Flags' | cut -c1-200
  python3 -c "from vocseg.data.synthetic import default_dataset_root as d; print(d())"
  # equal-time CPU runs on cores 0-9, in the background
  nohup python3 benchmarks/bench_recipes.py --budget $BUDGET --cores-per-run 2 --out $RES/recipes > $RES/recipes.log 2>&1 &
  # GPU tables on the remaining cores
  taskset -c 10-15 python3 benchmarks/bench_models.py --device cuda --train-size 512 --batch 16 --peak-tflops 989 > $OUT/models_gpu.txt 2>&1
  taskset -c 10-15 python3 benchmarks/bench_models.py --device cuda --train-size 512 --batch 16 --peak-tflops 989 --channels-last --models transfer_unet unet deeplabv3_resnet50 fcn_resnet50 > $OUT/models_gpu_channels_last.txt 2>&1
  taskset -c 10-15 python3 -m vocseg synth /tmp/synth500 --train 800 --val 40 --max-side 500 --workers 6 > /dev/null
  taskset -c 10-15 python3 -m vocseg train --config configs/strong.yaml --model-arg pretrained=false --data-root /tmp/synth500 --train-split train --iters 150 --warmup-iters 20 --max-val-images 20 --out /tmp/strong-gpu --no-progress > $OUT/strong_gpu.log 2>&1
  cat /tmp/strong-gpu/history.csv >> $OUT/strong_gpu.log
  cat $RES/recipes.log
fi
if [ "$1" = collect ] || [ "${WAIT:-0}" = 1 ]; then
  while pgrep -f bench_recipes.py > /dev/null; do sleep 5; done
  cp $RES/recipes.log $OUT/
  tar czf $OUT/recipes.tgz --exclude='*.pt' -C $RES recipes
fi
