#!/usr/bin/env bash
# System calls and context switches of each proxy in its HTTP/1.1 peak window.
#
# Runs `cargo run --release -p benches -- all --only peak --repetitions 1 --no-write`
# and, 2 s into each proxy's HTTP/1.1 window, counts that process's system calls for
# 2 s with `perf stat` (tracepoints; needs root and perf). Divide by the requests in
# those 2 s: each proxy's `sendto` count is its upstream writes plus its downstream
# writes, so half of Remora's `sendto` is its request count (Envoy: its `sendto` plus
# `writev`, halved).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
cargo run --release -p benches -- all --only peak --repetitions 1 --no-write >"$out/bench.txt" 2>&1 &
bench=$!
events='raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write'
events+=',syscalls:sys_enter_readv,syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom'
events+=',syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl'
events+=',syscalls:sys_enter_futex,context-switches'
for who in remora envoy; do
  until grep -q "rep 0 $who: http1" "$out/bench.txt"; do sleep 0.05; done
  pid=$(pgrep -x "$who" | head -1)
  sleep 2
  perf stat -e "$events" -p "$pid" -o "$out/$who.perf" -- sleep 2
done
wait "$bench"
for who in remora envoy; do
  echo "== $who"
  grep -vE '^$|^#' "$out/$who.perf"
done
grep -E '^\| http1 64 conns x 1 streams, closed loop \|' "$out/bench.txt" || true
