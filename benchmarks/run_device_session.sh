#!/usr/bin/env bash
# The measurements docs/benchmarks.md and docs/results.md quote from a lent GPU machine (1 GPU, 16 cores),
# in one session: phase "start" (GPU tables and the equal-time CPU runs
# launched in the background, each pinned to its own 2 cores) and phase "collect" (waits, copies results).
# Usage there: bash benchmarks/run_device_session.sh start|collect   (results under $OUT); WAIT=1 ... start
# does both in one call (BUDGET=7m fits the 10-minute limit of one call). Phase "voc" (about 6 minutes):
# strong.yaml end to end at VOC scale on synthetic data (2,000 images up to 500 px, the real loader),
# GPU use sampled each second, then the same config under --budget 2m, and multi-scale TTA's cost.
# Phase "ckpt" (about 4 minutes): the same training with checkpoints written from a background thread,
# GPU use sampled, and benchmarks/bench_checkpoint.py's side-by-side on the GPU.
# Phase "augment" (about 3 minutes): augmentation in the loader workers against on the GPU (augment_on),
# benchmarks/bench_device_path.py on the built-in data and on 500 VOC-sized images.
# Phase "mfu" (at most TOTAL=550 s, steps in order of importance, each under `timeout`, the later ones cut
# when time runs out): benchmarks/bench_mfu.py at 512, batch 16: strong.yaml's model alone against the
# end-to-end loop (the real loader over 1,000 synthetic VOC-sized images; the "epoch s" of 10,582 images is
# estimated from that rate), its profile (top ops, trace), the same loop with augment_on: workers and with
# augment_ahead: false (inline), compile
# default/reduce-overhead, benchmarks/bench_device_path.py on that data, batch 32, FCN/DeepLabV3-R50 compile
# off/on, then max-autotune.
# Everything lands in $OUT/mfu_session.log, $OUT/profile/ and $OUT/gpu_use_mfu.csv (the tool returns 8 files).
# Phase "followup" (at most TOTAL=480 s, the same way): what "mfu" left unmeasured; see that phase below.
# A dry run on a CPU (COMPILE=0: eager only; the same variables work for "followup"):
#   DEV=cpu SIZE=64 BATCH=2 STEPS=1 WARMUP=1 REPEATS=1 N=24 MAXSIDE=128 COMPILE=0 OUT=/tmp/o bash ... mfu
set -u
export PYTHONPATH=$PWD/src MPLBACKEND=Agg VOCSEG_CACHE=/tmp/vocseg-cache
RES=/tmp/vocseg-results
# phases voc and ckpt: VOC-sized synthetic data, and strong.yaml on it as shipped but for ImageNet weights
synth500() { python3 -m vocseg synth /tmp/synth500 --train "$1" --val 100 --max-side 500 --workers 16 > /dev/null 2>&1; }
STRONG="train --config configs/strong.yaml --model-arg pretrained=false --data-root /tmp/synth500 --train-split train --no-progress --overwrite"
BUDGET=${BUDGET:-10m}
# phases mfu and followup: step CAP NAME CMD... runs CMD under `timeout` (CAP s, less if the phase's END is
# near), appended to LOG
step() {
  local cap=$1 name=$2 left=$((END - SECONDS)) t0=$SECONDS rc; shift 2
  if [ $left -lt 30 ]; then echo "=== $name: skipped, $left s left" >> $LOG; return; fi
  [ $cap -gt $left ] && cap=$left
  echo "=== $name (at most $cap s): $*" >> $LOG
  timeout -k 10 $cap "$@" >> $LOG 2>&1; rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" >> $LOG
}
machine() {
  python3 -c "import torch, torchvision; print('torch', torch.__version__, torchvision.__version__)"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv; lscpu | grep -E 'Model name|^CPU\(s\)'
}
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
  cat $RES/recipes.log
fi
if [ "$1" = collect ] || [ "${WAIT:-0}" = 1 ]; then
  while pgrep -f bench_recipes.py > /dev/null; do sleep 5; done
  cp $RES/recipes.log $OUT/
  tar czf $OUT/recipes.tgz --exclude='*.pt' -C $RES recipes
fi
if [ "$1" = voc ]; then  # sizes overridable for a dry run on a CPU: N=64 ITERS=8 ... BUDGET_VOC=40s
  N=${N:-2000}; ITERS=${ITERS:-625}; SHORT=${SHORT:-250}
  python3 -c "import torch, torchvision; print('torch', torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"
  nvidia-smi --query-gpu=name,memory.total --format=csv; lscpu | grep -E 'Model name|^CPU\(s\)'
  synth500 $N
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 1 > $OUT/gpu_use.csv &
  SMI=$!
  # 125 steps of 16 per epoch: epochs 2 and 4 are training only (val_every 3), epoch 1 holds cuDNN's warm-up
  python3 -m vocseg $STRONG --iters $ITERS --warmup-iters 50 --out /tmp/strong-gpu > $OUT/strong_gpu.log 2>&1
  kill $SMI
  cat /tmp/strong-gpu/history.csv >> $OUT/strong_gpu.log; cp /tmp/strong-gpu/metrics.json $OUT/strong_gpu_metrics.json
  python3 -m vocseg $STRONG --iters $SHORT --warmup-iters 50 --num-workers 15 --val-every 9 --out /tmp/strong-w15 > $OUT/strong_w15.log 2>&1
  cat /tmp/strong-w15/history.csv >> $OUT/strong_w15.log
  for t in none multiscale; do
    TIMEFORMAT="tta $t: %R s wall"
    { time python3 -m vocseg evaluate /tmp/strong-gpu/last.pt --data-root /tmp/synth500 --split val --tta $t --json >> $OUT/tta.log 2>&1; } 2>> $OUT/tta.log
  done
  python3 -m vocseg $STRONG --budget ${BUDGET_VOC:-2m} --out /tmp/strong-budget > $OUT/strong_budget.log 2>&1
  cat /tmp/strong-budget/history.csv >> $OUT/strong_budget.log; cp /tmp/strong-budget/metrics.json $OUT/strong_budget_metrics.json
fi
if [ "$1" = ckpt ]; then
  synth500 2000
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 1 > $OUT/gpu_use_async.csv &
  SMI=$!
  python3 -m vocseg $STRONG --iters 500 --warmup-iters 50 --out /tmp/strong-async > $OUT/strong_async.log 2>&1
  kill $SMI
  cat /tmp/strong-async/history.csv >> $OUT/strong_async.log
  python3 benchmarks/bench_checkpoint.py --config configs/strong.yaml --device cuda --steps 100 --repeats 2 > $OUT/bench_checkpoint_gpu.txt 2>&1
fi
if [ "$1" = mfu ]; then
  DEV=${DEV:-cuda}; SIZE=${SIZE:-512}; BATCH=${BATCH:-16}; STEPS=${STEPS:-10}; N=${N:-1000}; MAXSIDE=${MAXSIDE:-500}
  WARMUP=${WARMUP:-5}; REPEATS=${REPEATS:-3}; END=$((SECONDS + ${TOTAL:-550})); LOG=$OUT/mfu_session.log
  DATA=/tmp/synth-mfu; rm -rf $DATA
  export PYTHONUNBUFFERED=1
  if [ "${COMPILE:-1}" = 1 ]; then MODES="default reduce-overhead"; TV="none default"; else MODES=none; TV=none; fi
  MFU="python3 benchmarks/bench_mfu.py --device $DEV --size $SIZE --batch $BATCH --steps $STEPS --warmup $WARMUP --repeats $REPEATS"
  machine >> $LOG 2>&1
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 1 > $OUT/gpu_use_mfu.csv 2>&1 &
  SMI=$!
  step 120 synth python3 -m vocseg synth $DATA --train $N --val 8 --max-side $MAXSIDE --workers 16
  # strong.yaml as shipped (eager): model alone, end to end, loader alone, epoch estimate, profile of the loop
  step 150 strong-e2e $MFU --models configs/strong.yaml --data-root $DATA --profile $OUT/profile
  # augment_on's auto default: the same loop with augmentation in the loader workers instead of on the device
  sed 's/^augment_on: auto/augment_on: workers/' configs/strong.yaml > /tmp/strong_workers.yaml
  step 90 strong-e2e-workers $MFU --models /tmp/strong_workers.yaml --data-root $DATA
  # augment_ahead: null (on CUDA: the device path's augmentation on a thread of its own) against inline
  sed "s/^augment_ahead: null/augment_ahead: false/" configs/strong.yaml > /tmp/strong_inline.yaml
  step 90 strong-e2e-inline $MFU --models /tmp/strong_inline.yaml --data-root $DATA
  # the MFU goal: compile modes side by side, each also end to end (the ratio with the faster model)
  step 240 strong-compile $MFU --models configs/strong.yaml --data-root $DATA --compile $MODES
  step 60 device-path python3 benchmarks/bench_device_path.py --device $DEV --recipes strong --data-root $DATA
  step 60 strong-batch32 $MFU --models configs/strong.yaml --batch $((BATCH * 2))
  step 200 torchvision-compile $MFU --models fcn_resnet50 deeplabv3_resnet50 --compile $TV
  [ "${COMPILE:-1}" = 1 ] && step 300 strong-autotune $MFU --models configs/strong.yaml --compile max-autotune-no-cudagraphs
  kill $SMI 2>/dev/null
fi
if [ "$1" = augment ]; then
  python3 benchmarks/bench_device_path.py --device cuda --repeats 5 --recipes default strong_cpu strong_cpu+photometric strong > $OUT/device_path_gpu.txt 2>&1
  synth500 500
  python3 benchmarks/bench_device_path.py --device cuda --repeats 5 --recipes strong --data-root /tmp/synth500 >> $OUT/device_path_gpu.txt 2>&1
fi
if [ "$1" = followup ]; then
  # What the mfu phase of 2026-12-04 left unmeasured, each beside its baseline rerun in the same call (at most
  # TOTAL=480 s; steps in order of importance): inline against augment_ahead (strong.yaml's null: on CUDA) at
  # batch 16 (bench_mfu.py); the
  # epoch boundary in isolation (bench_epoch_boundary.py: inline, ahead, and checkpoints only at the start);
  # fcn_resnet50 and deeplabv3_resnet50 compile off/on end to end; ahead at batch 32; compile for the
  # paper's models, the model alone. Same data and sizes as mfu; the same CPU dry run works with this phase.
  DEV=${DEV:-cuda}; SIZE=${SIZE:-512}; BATCH=${BATCH:-16}; STEPS=${STEPS:-10}; N=${N:-1000}; MAXSIDE=${MAXSIDE:-500}
  WARMUP=${WARMUP:-5}; REPEATS=${REPEATS:-5}; END=$((SECONDS + ${TOTAL:-480})); LOG=$OUT/followup.log
  DATA=/tmp/synth-mfu; rm -rf $DATA
  export PYTHONUNBUFFERED=1
  if [ "${COMPILE:-1}" = 1 ]; then TV="none default"; else TV=none; fi
  MFU="python3 benchmarks/bench_mfu.py --device $DEV --size $SIZE --batch $BATCH --steps $STEPS --warmup $WARMUP --repeats $REPEATS"
  machine >> $LOG 2>&1
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 1 > $OUT/gpu_use_followup.csv 2>&1 &
  SMI=$!
  step 90 synth python3 -m vocseg synth $DATA --train $N --val 8 --max-side $MAXSIDE --workers 16
  sed "s/^augment_ahead: null/augment_ahead: false/" configs/strong.yaml > /tmp/strong_inline.yaml
  step 130 ahead $MFU --models /tmp/strong_inline.yaml configs/strong.yaml --data-root $DATA
  step 120 boundary python3 benchmarks/bench_epoch_boundary.py --data-root $DATA --epochs 4 \
    --override device=$DEV --override image_size=$SIZE --override batch_size=$BATCH --override max_train_images=640 \
    --set augment_ahead=false --set augment_ahead=true --set monitor=val_miou
  step 180 torchvision-compile $MFU --models fcn_resnet50 deeplabv3_resnet50 --compile $TV --data-root $DATA
  step 90 ahead-batch32 $MFU --batch $((BATCH * 2)) --models /tmp/strong_inline.yaml configs/strong.yaml --data-root $DATA
  step 300 paper-compile $MFU --models fcn unpool transfer unet transfer_unet --compile $TV
  kill $SMI 2>/dev/null
fi
