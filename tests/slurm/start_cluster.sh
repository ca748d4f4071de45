#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests/test_slurm.py (needs root).
#
#   tests/slurm/start_cluster.sh --install      install slurm-wlm + munge with apt-get if sbatch is missing (CI step)
#   tests/slurm/start_cluster.sh STATE_DIR      install if needed, then start munged (unless running), slurmctld and
#                                               slurmd with a config of their own in STATE_DIR; prints the env line
#                                               `SLURM_CONF=...` and writes the daemons' PIDs to STATE_DIR/pids
#
# Idempotent: running it again reuses what is installed and what is running. The daemons listen on 127.0.0.1
# only, on free ports, so the cluster does not clash with another one on the machine; whoever started them stops
# them by the PIDs in STATE_DIR/pids.
set -euo pipefail

install() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        return
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "ERROR: slurm is not installed and installing it needs root: apt-get install slurm-wlm munge" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait up to $2 seconds for command $1 to succeed.
wait_for() {
    local deadline=$((SECONDS + $2))
    until eval "$1" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "ERROR: timed out after $2 s waiting for: $1" >&2
            return 1
        fi
        sleep 0.5
    done
}

start() {
    local state
    state="$(realpath -m "$1")"
    mkdir -p "$state/spool/ctld" "$state/spool/d" "$state/log"
    : >"$state/pids"

    # munge: one per machine, at its default socket; start it only if none answers.
    if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        if [ ! -s /etc/munge/munge.key ]; then
            mkdir -p /etc/munge && dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
            chown munge:munge /etc/munge/munge.key 2>/dev/null || true
            chmod 400 /etc/munge/munge.key
        fi
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
        munged --force --pid-file "$state/munged.pid"
        wait_for "munge -n </dev/null | unmunge" 20
        echo "munged $(cat "$state/munged.pid")" >>"$state/pids"
    fi

    local host cpus memory ctld_port d_port
    host="$(hostname -s)"
    cpus="$(nproc)"
    memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
    ctld_port="$(free_port)"
    d_port="$(free_port)"
    cat >"$state/slurm.conf" <<EOF
ClusterName=testcluster
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctld_port}
SlurmdPort=${d_port}
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=${state}/spool/ctld
SlurmdSpoolDir=${state}/spool/d
SlurmctldPidFile=${state}/slurmctld.pid
SlurmdPidFile=${state}/slurmd.pid
SlurmctldLogFile=${state}/log/slurmctld.log
SlurmdLogFile=${state}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=30
MinJobAge=600
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
    export SLURM_CONF="$state/slurm.conf"
    slurmctld -D -f "$SLURM_CONF" >"$state/log/slurmctld.out" 2>&1 &
    echo "slurmctld $!" >>"$state/pids"
    wait_for "scontrol ping | grep -q UP" 30
    slurmd -D -f "$SLURM_CONF" -N "$host" >"$state/log/slurmd.out" 2>&1 &
    echo "slurmd $!" >>"$state/pids"
    wait_for "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'" 60
    echo "SLURM_CONF=$SLURM_CONF"
}

case "${1:-}" in
    --install) install ;;
    "" | -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    *) install && start "$1" ;;
esac
