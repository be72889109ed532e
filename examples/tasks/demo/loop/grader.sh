# SPDX-License-Identifier: MIT
# demo/loop: a grader that never ends. With limits.time = 1 the kernel stops it after one
# second of CPU time (RLIMIT_CPU); the wall-clock deadline (3 x time) is the safety net.
echo "looping forever"
while :; do :; done
