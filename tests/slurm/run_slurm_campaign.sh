#!/usr/bin/env bash
# Bring up a real one-node Slurm on this machine and run a tiny two-iteration campaign through
# `snakemake --profile profiles/slurm`.
#
#   tests/slurm/run_slurm_campaign.sh [CONFIG]     # default CONFIG: config/tiny.yaml
#   tests/slurm/run_slurm_campaign.sh --smoke      # daemons + one `sbatch --wrap hostname` only
#
# Needs root and apt-get (Debian): installs slurmctld slurmd slurm-client munge, starts munged
# (as user munge), slurmctld and slurmd in the foreground of background jobs, and ALWAYS stops
# the daemons it started, by pid, on exit. Without root or apt it prints "skipped: ..." and
# exits 0. Facts behind the settings: docs/oracles.md and the environment notes —
#   * the config must live at /etc/slurm/slurm.conf (the executor plugin strips SLURM_* inside
#     jobs, so SLURM_CONF alone breaks the job's srun);
#   * no accounting database: sacct fails, so the profile polls squeue and MinJobAge >= 120 s
#     keeps finished jobs visible to it;
#   * the host name must resolve (to 127.0.0.1 here); cons_tres so a cpu count is honoured;
#     memory is not a consumable resource (CR_Core) so a rule's mem_mb never pends a job.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SMOKE=0
CONFIG="config/tiny.yaml"
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) CONFIG="$arg" ;;
    esac
done

log() { echo "[slurm-test $(date +%H:%M:%S)] $*"; }

if [[ "$(id -u)" != 0 ]]; then echo "skipped: not root"; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then echo "skipped: no apt-get"; exit 0; fi

WORK="$(mktemp -d /tmp/oedal-slurm.XXXXXX)"
chmod 755 "$WORK"
CONF=/etc/slurm/slurm.conf
MARK="# written by oedal tests/slurm/run_slurm_campaign.sh"
PIDS=()
CONF_BACKUP=""

cleanup() {
    local rc=$?
    set +e
    # Stop what we started, newest first, by pid (never by name).
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[i]}"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
            log "stopped pid $pid"
        fi
    done
    if [[ -n "$CONF_BACKUP" ]]; then mv -f "$CONF_BACKUP" "$CONF"; log "restored the previous $CONF"
    elif [[ -f "$CONF" ]] && grep -qF "$MARK" "$CONF"; then cp "$CONF" "$WORK/slurm.conf"; rm -f "$CONF"; fi
    log "logs and results kept in $WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. packages -------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$WORK/apt.log" 2>&1 || true
    if ! apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >>"$WORK/apt.log" 2>&1; then
        echo "skipped: apt-get install of slurm failed (see $WORK/apt.log)"; exit 0
    fi
fi

# ---- 2. host name and slurm.conf -----------------------------------------------------------------
HOST="$(hostname -s)"
if ! getent hosts "$HOST" >/dev/null; then
    echo "127.0.0.1 $HOST" >>/etc/hosts
    log "added '127.0.0.1 $HOST' to /etc/hosts"
fi
NODE_LINE="$(slurmd -C | head -n1)"          # NodeName=... CPUs=... RealMemory=...
NODE_LINE="${NODE_LINE/NodeName=$HOST/NodeName=$HOST NodeAddr=127.0.0.1}"
mkdir -p /etc/slurm "$WORK/state" "$WORK/spool" "$WORK/log"  # fresh state: no stale jobs come back
if [[ -f "$CONF" ]] && ! grep -qF "$MARK" "$CONF"; then
    CONF_BACKUP="$WORK/slurm.conf.orig"
    cp -p "$CONF" "$CONF_BACKUP"
    log "backed up an existing $CONF"
fi
cat >"$CONF" <<EOF
$MARK
ClusterName=oedal
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
$NODE_LINE State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
log "wrote $CONF: $NODE_LINE"

# ---- 3. daemons ----------------------------------------------------------------------------------
start_daemon() {  # name, command...: start in the background, remember the pid
    local name="$1"; shift
    "$@" >"$WORK/log/$name.out" 2>&1 &
    PIDS+=("$!")
    log "started $name (pid $!)"
}
if [[ -S /run/munge/munge.socket.2 ]] && munge -n </dev/null >/dev/null 2>&1; then
    log "munged already running: using it"
else
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    [[ -f /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
    start_daemon munged setpriv --reuid munge --regid munge --init-groups munged -F
    for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n </dev/null | unmunge >/dev/null || { echo "munged did not come up"; exit 1; }
fi
if scontrol ping 2>/dev/null | grep -q UP; then
    echo "a slurmctld is already running here; refusing to replace it"; exit 1
fi
start_daemon slurmctld slurmctld -D
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || { cat "$WORK/log/slurmctld.log"; echo "slurmctld did not come up"; exit 1; }
start_daemon slurmd slurmd -D
for _ in $(seq 100); do sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break; sleep 0.2; done
sinfo
sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)' || { cat "$WORK/log/slurmd.log"; echo "node not idle"; exit 1; }

# ---- 4. a trivial job ----------------------------------------------------------------------------
JOB="$(sbatch --parsable --chdir "$WORK" --output "$WORK/hostname.%j.out" --cpus-per-task 1 --wrap hostname)"
log "submitted job $JOB"
for _ in $(seq 150); do [[ -z "$(squeue -h -j "$JOB" -t PD,R,CG 2>/dev/null)" ]] && break; sleep 0.2; done
OUTFILE="$WORK/hostname.$JOB.out"
[[ -s "$OUTFILE" ]] || { echo "job $JOB wrote no output"; scontrol show job "$JOB"; exit 1; }
log "job $JOB ran on: $(cat "$OUTFILE")"
if [[ "$SMOKE" == 1 ]]; then log "smoke test passed"; exit 0; fi

# ---- 5. the campaign through snakemake's slurm executor ------------------------------------------
cd "$REPO"
[[ -f "$CONFIG" ]] || { echo "config $CONFIG not found"; exit 1; }
[[ -d profiles/slurm ]] || { echo "profiles/slurm not found"; exit 1; }
export PATH="$REPO/.venv/bin:$PATH"
RESULTS="$WORK/results"
EXTRA=()
if grep -rqs results_dir workflow/schemas/ config/ workflow/rules/ Snakefile; then
    EXTRA=(--config "results_dir=$RESULTS")
    # OEDAL_SLURM_STRATEGIES=qs1-greedy runs one strategy only (the pytest wrapper does, to stay quick)
    [[ -n "${OEDAL_SLURM_STRATEGIES:-}" ]] && EXTRA+=("strategies=[${OEDAL_SLURM_STRATEGIES}]")
    # OEDAL_SLURM_ITERATIONS=1: one selection round (iter_000 and iter_001: every rule still runs once)
    [[ -n "${OEDAL_SLURM_ITERATIONS:-}" ]] && EXTRA+=("stop={iterations: ${OEDAL_SLURM_ITERATIONS}}")
else
    RESULTS="$REPO/results"
fi
# OEDAL_SLURM_SNAKEMAKE_ARGS: more snakemake options, e.g. the pytest wrapper's quicker polling (a one-node
# test cluster answers squeue at once; the profile's defaults are sized for a shared cluster's controller)
read -ra MORE <<<"${OEDAL_SLURM_SNAKEMAKE_ARGS:-}"
EXTRA+=("${MORE[@]}")
log "snakemake --profile profiles/slurm --configfile $CONFIG ${EXTRA[*]}"
snakemake --profile profiles/slurm --configfile "$CONFIG" "${EXTRA[@]}" 2>&1 | tee "$WORK/log/snakemake.log"
N_ITER="$(find "$RESULTS" -type d -name 'iter_*' | wc -l)"
find "$RESULTS" -type d -name 'iter_*' | sort
if [[ "$N_ITER" -lt 2 ]]; then echo "expected at least two iteration directories under $RESULTS"; exit 1; fi
N_MODELS="$(find "$RESULTS" -name model.pt | wc -l)"
log "campaign done: $N_ITER iteration directories, $N_MODELS models under $RESULTS"
[[ "$N_MODELS" -ge 1 ]] || { echo "no model.pt under $RESULTS"; exit 1; }
log "slurm campaign passed"
