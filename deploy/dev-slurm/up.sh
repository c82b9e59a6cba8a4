#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on this machine (Debian's packages), for tests and trials.
#
#   deploy/dev-slurm/up.sh        # idempotent: installs what is missing, starts what is not running
#   deploy/dev-slurm/down.sh      # stops it
#
# One node ("localhost", 127.0.0.1) with this machine's cores and memory, one partition "debug"
# (the default), munge authentication, cores and memory as consumable resources. Walltime limits are
# enforced; memory limits are not (no cgroup plugin). Needs root (it installs packages and runs the
# daemons as root); state lives in /var/lib/spheroid-slurm, logs in /var/log/spheroid-slurm.
# Facts behind the settings: ../shared/STACK.md ("HPC pieces that run here").
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "up.sh: needs root (it installs packages and starts munged, slurmctld, slurmd)" >&2; exit 1; }

STATE=/var/lib/spheroid-slurm
LOGS=/var/log/spheroid-slurm
CONF=/etc/slurm/slurm.conf
PARTITION=${SPHEROID_SLURM_PARTITION:-debug}

missing=()
for cmd in slurmctld slurmd sinfo munged; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
if ((${#missing[@]})); then
    echo "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; }
fi

mkdir -p "$STATE/ctld" "$STATE/d" "$LOGS" /etc/slurm /run/munge /var/log/munge /var/lib/munge /etc/munge
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
[[ -s /etc/munge/munge.key ]] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }

cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
conf=$(cat <<CONF
# written by deploy/dev-slurm/up.sh
ClusterName=spheroid-dev
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
KillWait=10
MinJobAge=60
JobRequeue=1
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
)
if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$conf" ]]; then
    echo "$conf" > "$CONF"
    restart=1
fi

running() { pgrep -x "$1" >/dev/null; }
running munged || runuser -u munge -- /usr/sbin/munged
if [[ ${restart:-0} -eq 1 ]]; then
    pkill -x slurmctld || true
    pkill -x slurmd || true
    sleep 1
fi
running slurmctld || slurmctld -i
running slurmd || slurmd -N localhost

for _ in $(seq 1 60); do
    if state=$(sinfo -h -N -o "%T" 2>/dev/null) && [[ $state == idle* || $state == mixed* || $state == allocated* ]]; then
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
        echo "SLURM is up: partition $PARTITION, node localhost ($cpus CPUs, $mem_mb MB), state $state"
        exit 0
    fi
    if [[ ${state:-} == down* || ${state:-} == drain* ]]; then
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
    fi
    sleep 1
done
echo "up.sh: SLURM did not become ready in 60 s; see $LOGS/slurmctld.log and $LOGS/slurmd.log" >&2
exit 1
