#!/usr/bin/env bash
# One prepared run on a GPU machine (the workplace's device tool): GPU equality tests, the GPU benchmark sections,
# precision choices, and the bf16-on-CPU NaN regression 6 times on that machine's CPU (with the oneDNN guard, and
# once without it to show the failure it prevents). Logs go to $OUT (or ./device-out). Needs soundfile (+ cffi,
# pycparser) as wheels in .whl/ where the machine has no package index. Expected to take ~5 min on the H200 machine;
# the timeouts add up to ~12 min, so run it with the device tool's timeout_s=600 and what is in $OUT comes back.
set -uo pipefail
OUT="${OUT:-device-out}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version --format=csv; lscpu | grep -E 'Model name|^CPU\(s\)';
  grep -o 'amx_bf16\|avx512_bf16' /proc/cpuinfo | sort | uniq -c; python3 -c 'import torch; print(torch.__version__)'; } \
    2>&1 | tee "$OUT/machine.txt"
# 1. GPU equality tests
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -s 2>&1 | tee "$OUT/gpu_tests.log" | tail -30
# 2. precisions on the GPU (model-only and end to end)
timeout 90 python3 -m benchmarks.dtypes --device cuda --files 64 --out "$OUT/dtypes_gpu.json" 2>&1 | tee "$OUT/dtypes_gpu.log"
# 3. the harness's GPU sections: model-only and end-to-end embed of 256 10-s files (24 take ~0.03 s of network at the
#    goal's 8,000 audio s/s), the command's default workers; then 8 workers with the features on the GPU (the opt-in
#    GPU front-end, which the harness measures unless told otherwise), on the CPU (the command's default), and with
#    batches of 64 windows instead of 8
timeout 150 python3 -m benchmarks.run --device cuda --sections model e2e --archs v3 --e2e-files 256 --e2e-pairs 3 \
    --work-dir /tmp/bench --out "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1; tail -40 "$OUT/bench_gpu.log"
for v in "--e2e-workers 8" "--e2e-workers 8 --e2e-cpu-features" "--e2e-workers 8 --e2e-batch-size 64"; do
    timeout 60 python3 -m benchmarks.run --device cuda --sections e2e --archs v3 --e2e-files 256 --e2e-pairs 3 \
        --work-dir /tmp/bench $v --out "$OUT/bench_gpu_e2e_$(echo $v | tr -dc a-z0-9).json" \
        > "$OUT/bench_gpu_e2e_$(echo $v | tr -dc a-z0-9).log" 2>&1
    grep -A3 "^End-to-end" "$OUT/bench_gpu_e2e_$(echo $v | tr -dc a-z0-9).log"
done
# 4. bf16 on this machine's CPU (AMX): without the guard once (expected to fail), then with it 6 times at once
rm -rf /tmp/noguard && mkdir /tmp/noguard && cp -r dcasenet_hub tests /tmp/noguard/
sed -i 's/if max(stride) == 1 or x.shape\[-1\]/if True or x.shape[-1]/' /tmp/noguard/dcasenet_hub/models/blocks.py
(cd /tmp/noguard && CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 PYTHONPATH="/tmp/site:/tmp/noguard" timeout 90 \
    python3 -m pytest -q -p no:cacheprovider tests/test_bf16.py -k "not strided_conv_guard" 2>&1 | tail -6) \
    | tee "$OUT/bf16_noguard.log"
for i in $(seq 1 6); do
    echo "run $i: $(CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 timeout 100 python3 -m pytest -q -p no:cacheprovider \
        tests/test_bf16.py 2>&1 | tail -1)" &
    if (( i % 6 == 0 )); then wait; fi
done 2>&1 | tee "$OUT/bf16_x6.log"
wait
echo "device check done"
