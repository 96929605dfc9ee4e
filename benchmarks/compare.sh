#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# rtb against its libtorch peer, side by side, on this machine:
#
#   benchmarks/compare.sh [build-dir]        (default build-dir: build-compare)
#
# Configures a Release build with -DRTB_BUILD_TORCH_PEER=ON (needs libtorch-dev; install
# libopenblas0 too, or torch runs on netlib BLAS), builds, checks rtb's gradient against torch
# autograd, runs both benchmark suites (REPS repetitions, medians reported), measures peak RSS
# at T = 100, 250, 500, 1000 (one process each) and prints the ratios peer time / rtb time for
# the RTB step and for sampling at batch 500, T = 100: rtb at 2 threads (and 1), the peer at its
# best thread count, and for the UNet's forward and backward (one thread each). Everything lands in OUT (default <build-dir>/compare): per-benchmark JSON,
# rtb.txt and torch.txt (medians), memory.txt, vs_t.csv and the plot (PLOT, default
# OUT/benchmarks_vs_T.png).
#
# Environment: REPS (default 3), OUT, PLOT, FILTER_RTB / FILTER_TORCH (benchmark filters),
# QUIET_WAIT (seconds to wait for other processes to leave the CPUs before each benchmark,
# default 600), TRIES (runs of a benchmark disturbed by other processes before its result is
# taken anyway, default 4).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build-compare}
out=${OUT:-$build/compare}
plot=${PLOT:-$out/benchmarks_vs_T.png}
reps=${REPS:-3}
mkdir -p "$out"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DRTB_BUILD_TORCH_PEER=ON >"$out/configure.log"
cmake --build "$build" -j2 --target rtb_bench rtb_memory rtb_plot_vs_t rtb_torch_bench rtb_torch_check >"$out/build.log"
bin=$build/benchmarks

echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\)|L2 cache|L3 cache):' | sed 's/  */ /g'
grep -o -m1 -w 'avx512f' /proc/cpuinfo | sed 's/^/flags include: /'
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "compiler: $(c++ --version | head -1)"

echo "== torch peer: BLAS and threads"
"$bin/peers/rtb_torch_bench" --config | grep -E '^(torch |  - (OpenMP|CPU capability)|sgemm_|openblas|default threads|as benchmarked)'

echo "== correctness: rtb gradient vs torch autograd"
"$bin/peers/rtb_torch_check" | grep -E 'limit|passed'

# Share of CPU time other processes used over the last 2 s, in percent.
busy() {
  local a b
  a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
  awk -v u="$(( (b[1]+b[2]+b[3]+b[6]+b[7]) - (a[1]+a[2]+a[3]+a[6]+a[7]) ))" \
      -v t="$(( (b[1]+b[2]+b[3]+b[4]+b[5]+b[6]+b[7]) - (a[1]+a[2]+a[3]+a[4]+a[5]+a[6]+a[7]) ))" 'BEGIN { printf "%.0f", 100 * u / t }'
}
wait_quiet() {
  local waited=0 b
  while b=$(busy); [ "$b" -gt 5 ]; do
    if [ "$waited" -ge "${QUIET_WAIT:-600}" ]; then
      echo "WARNING: CPUs still ${b}% busy with other work after ${waited}s; the timings below are disturbed"
      return
    fi
    sleep 10; waited=$((waited + 12))
  done
  echo "CPUs quiet (${b}% busy over 2 s) after waiting ${waited}s"
}

busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# User + system seconds of this shell's finished children: bash's `times`, second line. Called
# as `child_seconds; c=$REPLY` (a $(…) subshell would report its own, empty, children).
child_seconds() {
  times >"$out/.times"
  REPLY=$(tail -1 "$out/.times" | awk '{ n = 0; for (i = 1; i <= NF; ++i) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } print n }')
}
# Runs every benchmark of a binary on its own, each after the CPUs have gone quiet, and again
# (up to TRIES times) if other processes took more than 2% of the CPUs while it ran: the
# machine may be shared, and a 2-thread benchmark on 2 cores cannot absorb any neighbour.
run_suite() {  # binary tag filter
  local names name i=00 try b0 c0 t0 b1 c1 t1 other
  mapfile -t names < <("$1" --benchmark_list_tests=true --benchmark_filter="$3")
  rm -f "$out/$2".*.json
  for name in "${names[@]}"; do
    i=$(printf %02d $((10#$i + 1)))
    for ((try = 1; try <= ${TRIES:-4}; ++try)); do
      wait_quiet >/dev/null
      b0=$(busy_jiffies); child_seconds; c0=$REPLY; t0=$(date +%s.%N)
      "$1" --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true --benchmark_color=false \
        --benchmark_filter="^$name\$" --benchmark_out="$out/$2.$i.json" --benchmark_out_format=json \
        >/dev/null 2>"$out/$2.stderr"
      b1=$(busy_jiffies); child_seconds; c1=$REPLY; t1=$(date +%s.%N)
      # CPU time spent on anything but this benchmark, as a share of both cores' wall time.
      other=$(awk -v b="$((b1 - b0))" -v hz="$(getconf CLK_TCK)" -v c="$c1" -v c0="$c0" -v t="$t1" -v t0="$t0" \
        'BEGIN { o = b / hz - (c - c0); if (o < 0) o = 0; printf "%.1f", 100 * o / (2 * (t - t0)) }')
      awk -v o="$other" 'BEGIN { exit !(o <= 2) }' && break
    done
    echo "$name: others used ${other}% of the CPUs (try $((try > ${TRIES:-4} ? ${TRIES:-4} : try)))"
  done
}

# Google Benchmark's JSON has one key per line; reduce each median entry to
# "name seconds key=value ...", name without the /min_time:…/real_time_median decorations.
medians() {
  awk '
    /"name":/        { n = $0; sub(/.*"name": "/, "", n); sub(/".*/, "", n); c = "" }
    /"aggregate_name": "median"/ { med = 1 }
    /"repetitions": 1,/ { med = 1 }
    /"real_time":/   { rt = $2; sub(/,/, "", rt) }
    /"time_unit":/   { u = $2; gsub(/[",]/, "", u) }
    /"(GFLOP\/s|GB\/s|Gelem\/s|traj\/s|s\/step|blas_threads)":/ { k = $1; gsub(/[":]/, "", k); v = $2; sub(/,/, "", v); c = c " " k "=" v }
    /^    }/ {
      if (med) {
        s = rt * (u == "ns" ? 1e-9 : u == "us" ? 1e-6 : u == "ms" ? 1e-3 : 1)
        gsub(/\/min_time:[0-9.]+/, "", n); sub(/\/real_time(_median)?$/, "", n)
        printf "%s %.6g%s\n", n, s, c
      }
      med = 0
    }' "$1"
}
echo "== running rtb_bench ($reps repetitions each)"
run_suite "$bin/rtb_bench" rtb "${FILTER_RTB:-.}"
echo "== running rtb_torch_bench ($reps repetitions each)"
run_suite "$bin/peers/rtb_torch_bench" torch "${FILTER_TORCH:-.}"
echo "load average after the suites: $(cut -d' ' -f1-3 /proc/loadavg)"

for f in "$out"/rtb.*.json; do medians "$f"; done >"$out/rtb.txt"
for f in "$out"/torch.*.json; do medians "$f"; done >"$out/torch.txt"
echo "== medians (name, seconds per iteration, counters)"
cat "$out/rtb.txt" "$out/torch.txt"

echo "== peak RSS (one process per T, 3 steps, batch 500)"
: >"$out/memory.txt"
for T in 100 250 500 1000; do
  "$bin/rtb_memory" "$T" 3 2 | tee -a "$out/memory.txt"
  "$bin/peers/rtb_torch_bench" --memory "$T" 3 1 | tee -a "$out/memory.txt"
done

secs() { awk -v n="$2" '$1 == n { print $2 }' "$1"; }
rss_mib() { awk -v i="$1" -v t="T=$2" '$2 == "impl=" i && $3 == t { split($7, a, "="); printf "%.1f", a[2] / 1024 }' "$out/memory.txt"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# Paired ratios: rtb and the peer measured back to back, PAIRS times, median of the per-pair
# ratios. Whole runs on this VM drift by 20-40% with the host (docs/benchmarks.md), so a ratio
# of two suites run minutes apart is less trustworthy than this.
paired() {  # what rtb-threads peer-threads
  local i r p
  : >"$out/pairs_$1.txt"
  for ((i = 1; i <= ${PAIRS:-5}; ++i)); do
    wait_quiet >/dev/null
    r=$("$bin/rtb_bench" --benchmark_filter="^BM_$1/500/100/$2/" --benchmark_format=json 2>/dev/null | medians /dev/stdin | awk '{ print $2 }')
    wait_quiet >/dev/null
    p=$("$bin/peers/rtb_torch_bench" --benchmark_filter="^BM_Torch$1/500/100/$3/" --benchmark_format=json 2>/dev/null |
      medians /dev/stdin | awk '{ print $2 }')
    echo "$r $p" >>"$out/pairs_$1.txt"
  done
  awk -v w="$1" -v a="$2" -v b="$3" '
    { r[NR] = $1; p[NR] = $2; q[NR] = $2 / $1 }
    END {
      n = NR
      for (i = 1; i <= n; ++i) s[i] = q[i]
      for (i = 2; i <= n; ++i) for (j = i; j > 1 && s[j - 1] > s[j]; --j) { t = s[j]; s[j] = s[j - 1]; s[j - 1] = t }
      m = (n % 2) ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
      printf "%s paired x%d: rtb %d thread(s) vs peer %d thread(s): peer/rtb median %.2fx (min %.2f, max %.2f); rtb", w, n, a, b, m, s[1], s[n]
      for (i = 1; i <= n; ++i) printf " %.4g", r[i]; printf " s; peer"
      for (i = 1; i <= n; ++i) printf " %.4g", p[i]; printf " s\n"
    }' "$out/pairs_$1.txt"
}

# The peer's best thread count for a benchmark at batch 500, T = 100.
best_threads() {
  awk -v a="$(secs "$out/torch.txt" "BM_Torch$1/500/100/2")" -v b="$(secs "$out/torch.txt" "BM_Torch$1/500/100/1")" \
    'BEGIN { print (a < b ? 2 : 1) }'
}

echo "== ratios, batch 500, T = 100 (peer time / rtb time; the peer at its best thread count)"
for what in RtbStep Sample; do
  best=$(best_threads "$what")
  peer=$(secs "$out/torch.txt" "BM_Torch$what/500/100/$best")
  for th in 2 1; do
    mine=$(secs "$out/rtb.txt" "BM_$what/500/100/$th")
    echo "$what: rtb $th thread(s) ${mine}s, peer $best thread(s) ${peer}s -> $(ratio "$peer" "$mine")x"
  done
done
for what in RtbStep Sample; do paired "$what" 2 "$(best_threads "$what")"; done
echo "== UNet, batch 32, one thread each (peer time / rtb time; size/trained)"
for what in UnetForward UnetBackward; do
  for arg in 28/0 28/1 16/0 16/1; do
    mine=$(secs "$out/rtb.txt" "BM_$what/$arg")
    peer=$(secs "$out/torch.txt" "BM_Torch$what/$arg")
    [ -n "$mine" ] && [ -n "$peer" ] && echo "$what/$arg: rtb ${mine}s, peer ${peer}s -> $(ratio "$peer" "$mine")x"
  done
done
for T in 100 1000; do
  echo "peak RSS T=$T: rtb $(rss_mib rtb $T) MiB, peer $(rss_mib torch $T) MiB"
done
echo "RSS(T=1000)/RSS(T=100): rtb $(ratio "$(rss_mib rtb 1000)" "$(rss_mib rtb 100)"), peer $(ratio "$(rss_mib torch 1000)" "$(rss_mib torch 100)")"
echo "rtb 2 threads vs 1 (RtbStep T=100): $(ratio "$(secs "$out/rtb.txt" BM_RtbStep/500/100/1)" "$(secs "$out/rtb.txt" BM_RtbStep/500/100/2)")x"
gemm2=$(awk '$1 == "BM_GemmPeak/500/64/64/2" { for (i = 3; i <= NF; ++i) if ($i ~ /^GFLOP\/s=/) { sub(/.*=/, "", $i); print $i } }' "$out/rtb.txt")
step2=$(awk '$1 == "BM_RtbStep/500/100/2" { for (i = 3; i <= NF; ++i) if ($i ~ /^GFLOP\/s=/) { sub(/.*=/, "", $i); print $i } }' "$out/rtb.txt")
echo "RtbStep/500/100/2 at ${step2} GFLOP/s = $(ratio "$step2" "$gemm2") of GemmPeak/500/64/64/2 (${gemm2} GFLOP/s)"

best=$(best_threads RtbStep)
{
  echo "series,T,step_seconds,peak_rss_mib"
  for T in 100 250 500 1000; do
    echo "rtb 2 threads,$T,$(secs "$out/rtb.txt" "BM_RtbStep/500/$T/2"),$(rss_mib rtb $T)"
    echo "libtorch $best thread$([ "$best" = 1 ] || echo s),$T,$(secs "$out/torch.txt" "BM_TorchRtbStep/500/$T/$best"),$(rss_mib torch $T)"
  done
} >"$out/vs_t.csv"
"$bin/rtb_plot_vs_t" "$out/vs_t.csv" "$plot"
echo "== wrote $out/vs_t.csv and $plot"
