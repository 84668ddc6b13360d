#!/usr/bin/env bash
# A real single-machine Slurm for synscale's tests and demos.
#
#   slurm/local-cluster.sh start [--no-accounting]   install if missing, configure, start, wait idle
#   slurm/local-cluster.sh stop                      stop the daemons this script started
#   slurm/local-cluster.sh status                    what runs, and sinfo
#
# Daemons: munged, MariaDB + slurmdbd (accounting; left out with
# --no-accounting, so sacct fails as on many small clusters), slurmctld, and
# two slurmd processes (`slurmd -N node1`, `-N node2`) that emulate two nodes
# on this machine, each with its own port, spool, pid and log file, so
# multi-node jobs run for real. MaxArraySize is small (11) so that synscale's
# array splitting is exercised. Idempotent: `start` on a running cluster in
# the same mode does nothing; a changed config (the other mode) restarts the
# Slurm daemons.
set -Eeuo pipefail

STATE=${SYNSCALE_SLURM_STATE:-/var/lib/synscale-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
MARKER="# written by synscale slurm/local-cluster.sh"
CLUSTER=synscale
NODES=(node1 node2)
NODE_CPUS=${SYNSCALE_SLURM_CPUS:-2}
NODE_MEM=${SYNSCALE_SLURM_MEM_MB:-12000}
MAX_ARRAY=${SYNSCALE_SLURM_MAX_ARRAY:-11}
DB_PASS=synscale-local
HOST=$(hostname)
PACKAGES=(munge slurmctld slurmd slurmdbd slurm-client mariadb-server)

say() { echo "local-cluster: $*"; }
die() { echo "local-cluster: error: $*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

alive() {  # alive PIDFILE: the process recorded there runs
  # Not a zombie: in a container whose init does not reap, a killed daemon
  # stays one, and kill -0 still succeeds on it.
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null &&
    [ "$(ps -o stat= -p "$(cat "$1")" 2>/dev/null | cut -c1)" != Z ]
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -ne 0 ]; then
    die "missing packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}"
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

resolve_nodes() {
  # The emulated node names must resolve to this machine.
  for n in "${NODES[@]}"; do
    getent hosts "$n" >/dev/null || echo "127.0.0.1 $n" >> /etc/hosts
  done
}

write_conf() {  # write_conf ACCOUNTING(yes|no)
  if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to replace a real cluster's config"
  fi
  mkdir -p "$CONF_DIR" "$STATE"/{ctld,log} /var/log/slurm
  local acct="accounting_storage/none"
  [ "$1" = yes ] && acct="accounting_storage/slurmdbd"
  local conf_tmp=$CONF.tmp
  cat > "$conf_tmp" <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
StateSaveLocation=$STATE/ctld
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdSpoolDir=$STATE/spool-%n
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmdLogFile=$STATE/log/slurmd-%n.log
# No cgroups in containers: track processes by parentage, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
# Memory is a consumable resource, and enforced: without cgroups, slurmstepd
# polls each step's RSS (every JobAcctGatherFrequency seconds) and kills a
# step over its --mem, which Slurm records as OUT_OF_MEMORY.
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
MaxArraySize=$MAX_ARRAY
MaxJobCount=100000
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
AccountingStorageType=$acct
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=2
JobCompType=jobcomp/none
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=node1 NodeHostname=$HOST Port=17001 CPUs=$NODE_CPUS RealMemory=$NODE_MEM State=UNKNOWN
NodeName=node2 NodeHostname=$HOST Port=17002 CPUs=$NODE_CPUS RealMemory=$NODE_MEM State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  if ! cmp -s "$conf_tmp" "$CONF"; then
    # A running cluster reads a changed config (a mode switch, a newer
    # version of this script) only when restarted.
    for n in "${NODES[@]}"; do stop_daemon "slurmd $n" "$STATE/slurmd-$n.pid"; done
    stop_daemon slurmctld "$STATE/slurmctld.pid"
    mv "$conf_tmp" "$CONF"
  else
    rm -f "$conf_tmp"
  fi
  cat > "$DBD_CONF.tmp" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
  chmod 600 "$DBD_CONF.tmp"
  mv "$DBD_CONF.tmp" "$DBD_CONF"
  echo "$1" > "$STATE/accounting"
}

start_munge() {
  alive "$STATE/munged.pid" && return
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none;
                                   chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  # A munged killed moments ago may still hold its socket: try for a while.
  for _ in $(seq 20); do
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid 2>"$STATE/log/munged.err" \
      && break
    sleep 0.5
  done
  alive /run/munge/munged.pid || die "munged did not start: $(cat "$STATE/log/munged.err")"
  cp /run/munge/munged.pid "$STATE/munged.pid"
}

start_mariadb() {
  alive "$STATE/mariadb.pid" && return
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
    --pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 --skip-name-resolve \
    >"$STATE/log/mariadb.log" 2>&1 &
  for _ in $(seq 60); do
    mariadb -e "select 1" >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb -e "select 1" >/dev/null 2>&1 || die "MariaDB did not start; see $STATE/log/mariadb.log"
  # It runs as mysql and cannot write our state folder: copy its pid file.
  cp /run/mysqld/mysqld.pid "$STATE/mariadb.pid"
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  alive "$STATE/slurmdbd.pid" && return
  /usr/sbin/slurmdbd
  for _ in $(seq 60); do
    sacctmgr -n list cluster >/dev/null 2>&1 && break
    sleep 0.5
  done
  sacctmgr -n list cluster >/dev/null 2>&1 || die "slurmdbd did not answer; see $STATE/log/slurmdbd.log"
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
}

start_slurm() {
  alive "$STATE/slurmctld.pid" || /usr/sbin/slurmctld
  for n in "${NODES[@]}"; do
    alive "$STATE/slurmd-$n.pid" || /usr/sbin/slurmd -N "$n"
  done
}

cancel_stale_jobs() {
  # A cold start (no Slurm daemon of ours was running: a reboot, a crash, a
  # machine image taken while jobs ran) recovers the jobs of the cluster's
  # last life from StateSaveLocation. Their processes are gone; left alone,
  # the "running" ones hold nodes until Slurm gives up on them and the
  # pending ones start running old work. Cancel them: recorded as CANCELLED
  # in accounting, and job ids go on from where they were (slurmctld -c
  # would restart ids at 1 and alias old accounting records).
  local jobs=""
  for _ in $(seq 60); do
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null) && break
    sleep 0.5
  done
  [ -n "$jobs" ] || return 0
  say "cancelling $(echo "$jobs" | wc -l) job(s) left from before the cluster last stopped"
  # shellcheck disable=SC2086
  scancel $jobs 2>/dev/null || true
}

wait_idle() {  # wait_idle idle|responding
  # After a cold start every node must be idle; a running cluster is ready
  # when its nodes respond, whatever jobs they are running.
  local want='^idle$'
  [ "$1" = responding ] && want='^(idle|mix|alloc)$'
  for _ in $(seq 120); do
    local states
    # The controller may not answer yet: that is a reason to wait, not to fail.
    # (sinfo retries for minutes on a controller that is down: bound it.)
    local each
    each=$(timeout 10 sinfo -h -N -o "%t" 2>/dev/null || true)
    states=$(echo "$each" | sort -u | tr '\n' ' ')
    if [ "$(echo "$each" | grep -cE "$want" || true)" -ge "${#NODES[@]}" ]; then
      say "ready: nodes ${NODES[*]} $states(accounting: $(cat "$STATE/accounting"), MaxArraySize=$MAX_ARRAY)"
      return
    fi
    # A node that registered before the controller knew it stays down; resume it.
    scontrol update nodename=node[1-2] state=resume >/dev/null 2>&1 || true
    sleep 0.5
  done
  die "nodes did not become ready (states: ${states:-none}); see $STATE/log/"
}

stop_daemon() {  # stop_daemon NAME PIDFILE
  if alive "$2"; then
    kill "$(cat "$2")" 2>/dev/null || true
    for _ in $(seq 40); do alive "$2" || break; sleep 0.25; done
    alive "$2" && kill -9 "$(cat "$2")" 2>/dev/null || true
    say "stopped $1"
  fi
  rm -f "$2"
}

cmd_start() {
  local accounting=yes
  [ "${1:-}" = "--no-accounting" ] && accounting=no
  [ "$(id -u)" -eq 0 ] || die "run as root: the daemons and /etc/slurm need it"
  install_packages
  resolve_nodes
  write_conf "$accounting"
  [ "$accounting" = no ] && stop_daemon slurmdbd "$STATE/slurmdbd.pid"
  start_munge
  if [ "$accounting" = yes ]; then
    start_mariadb
    start_slurmdbd
  fi
  local cold=yes
  alive "$STATE/slurmctld.pid" && cold=no
  for n in "${NODES[@]}"; do alive "$STATE/slurmd-$n.pid" && cold=no; done
  start_slurm
  if [ "$cold" = yes ]; then
    cancel_stale_jobs
    wait_idle idle
  else
    wait_idle responding
  fi
}

cmd_stop() {
  for n in "${NODES[@]}"; do stop_daemon "slurmd $n" "$STATE/slurmd-$n.pid"; done
  stop_daemon slurmctld "$STATE/slurmctld.pid"
  stop_daemon slurmdbd "$STATE/slurmdbd.pid"
  stop_daemon mariadb "$STATE/mariadb.pid"
  stop_daemon munged "$STATE/munged.pid"
  rm -f "$STATE/accounting"
}

cmd_status() {
  local d
  for d in munged mariadb slurmdbd slurmctld slurmd-node1 slurmd-node2; do
    if alive "$STATE/$d.pid"; then echo "$d: running (pid $(cat "$STATE/$d.pid"))"; else echo "$d: stopped"; fi
  done
  echo "accounting: $(cat "$STATE/accounting" 2>/dev/null || echo unknown)"
  sinfo -N 2>/dev/null || true
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start [--no-accounting] | stop | status" >&2; exit 2 ;;
esac
