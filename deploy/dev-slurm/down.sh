#!/usr/bin/env bash
# Stop the single-node SLURM started by up.sh (jobs are cancelled; state and logs are kept).
set -euo pipefail
command -v scancel >/dev/null && scancel --user="$(id -un)" 2>/dev/null || true
for daemon in slurmd slurmctld munged; do
    pkill -x "$daemon" 2>/dev/null || true
done
for _ in $(seq 1 20); do
    pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || { echo "SLURM is down"; exit 0; }
    sleep 0.5
done
echo "down.sh: some daemons are still running" >&2
exit 1
