# Steps of the toolbox init, sourced by /usr/lib/toolbox/init (busybox sh, PID 1).
# Each step logs what it did; a failing step logs and lets the boot go on, so that
# sshd comes up whenever it can.

CIDATA="$RUN/cidata"
AGENT_SUP=

is_mounted() { grep -q " $1 " /proc/mounts; }

# --- mounts --------------------------------------------------------------------------

step_mounts() {
	# Decompress sshd, python and their libraries on the other CPU while we boot.
	cat $(cat "$TB/readahead.list") >/dev/null 2>&1 &
	mkdir -p /dev/pts /dev/shm "$RUN"
	mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
	mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
	ln -sfn /proc/self/fd /dev/fd
	ln -sfn /proc/self/fd/0 /dev/stdin
	ln -sfn /proc/self/fd/1 /dev/stdout
	ln -sfn /proc/self/fd/2 /dev/stderr
	# cgroup v2 only (the kernel runs with cgroup_no_v1=all), every controller delegated.
	mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
	read -r controllers </sys/fs/cgroup/cgroup.controllers
	for c in $controllers; do
		echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control || log "cgroup2: cannot enable $c"
	done
	read -r controllers </sys/fs/cgroup/cgroup.subtree_control
	log "cgroup2 mounted at /sys/fs/cgroup (subtree: $controllers)"
	echo 0 >/proc/sys/kernel/ctrl-alt-del # ctrl-alt-del -> SIGINT to us, not an instant reset
	# The 16 MiB DMA zone keeps 1/256 of the memory above it (3.7 MiB in 1 GiB) free for
	# ISA-DMA allocations, which no device of these VMs makes: let the rest use it.
	read -r _ ratios </proc/sys/vm/lowmem_reserve_ratio
	echo "0 $ratios" >/proc/sys/vm/lowmem_reserve_ratio
	# The modules the agent's first ip and nft runs make the kernel load (its bridge, its
	# NAT rules), in one busybox modprobe on the other CPU: each autoload is otherwise an
	# exec of kmod's modprobe from the squashfs, ~3 s of the agent's start at boot.
	modprobe -a bridge nf_tables nft_chain_nat nft_masq nft_ct nft_fib_ipv4 >/dev/null 2>&1 &
}

# --- data disk -----------------------------------------------------------------------

# The first whole disk (vd*, sd*) that is writable and empty: its first MiB is all zeros
# (no partition table, no filesystem, no LVM or RAID signature).
first_empty_disk() {
	for sys in /sys/block/vd* /sys/block/sd*; do
		[ -e "$sys" ] || continue
		read -r ro <"$sys/ro"
		read -r size <"$sys/size"
		[ "$ro" = 0 ] && [ "$size" -gt 2048 ] || continue
		dev=/dev/${sys##*/}
		cmp -s -n 1048576 "$dev" /dev/zero && { echo "$dev"; return 0; }
	done
	return 1
}

step_data_disk() {
	mkdir -p "$DATA"
	dev=$(findfs LABEL=toolbox-data 2>/dev/null)
	if [ -z "$dev" ] && dev=$(first_empty_disk); then
		log "formatting empty disk $dev as ext4 (label toolbox-data)"
		mkfs.ext4 -q -F -L toolbox-data -m 0 -E lazy_itable_init=1,lazy_journal_init=1 "$dev" ||
			{ log "mkfs.ext4 $dev failed"; dev=; }
	fi
	if [ -n "$dev" ] && mount -t ext4 -o noatime "$dev" "$DATA"; then
		log "data disk $dev mounted at $DATA"
	else
		log "no data disk: $DATA is in RAM and lost at power off"
	fi
	mkdir -p "$DATA/log"
}

# --- config drive --------------------------------------------------------------------

step_config_drive() {
	mkdir -p "$CIDATA"
	dev=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null)
	if [ -z "$dev" ] || ! mount -t iso9660 -o ro "$dev" "$CIDATA"; then
		log "no config drive: own host key, nobody can log in"
		return
	fi
	read -r version <"$CIDATA/version"
	log "config drive $dev mounted (format $version)"
	if [ -f "$CIDATA/agent.json" ]; then
		cp "$CIDATA/agent.json" "$RUN/agent.json"
		chmod 0600 "$RUN/agent.json"
		mkdir -p /etc/toolbox
		ln -sfn "$RUN/agent.json" /etc/toolbox/agent.json
	fi
}

# --- hostname, user, keys, mounts ----------------------------------------------------

# The toolbox user and group get the Mac user's uid/gid (so shared files match). A gid
# that already names another group becomes toolbox's primary group as it is; the
# toolbox group (which owns the agent's socket) then keeps its own gid.
set_user_ids() {
	uid=$1 gid=$2
	owner=$(awk -F: -v id="$uid" '$3 == id {print $1}' /etc/passwd)
	if [ -n "$owner" ] && [ "$owner" != toolbox ]; then
		log "uid $uid belongs to $owner: toolbox keeps its uid"
		uid=$(awk -F: '$1 == "toolbox" {print $3}' /etc/passwd)
	fi
	owner=$(awk -F: -v id="$gid" '$3 == id {print $1}' /etc/group)
	if [ -z "$owner" ]; then
		sed -i "s/^toolbox:x:[0-9]*:/toolbox:x:$gid:/" /etc/group
	elif [ "$owner" != toolbox ]; then
		sed -i 's/^toolbox:x:\([0-9]*\):$/toolbox:x:\1:toolbox/' /etc/group # member of group toolbox
	fi
	sed -i "s/^toolbox:x:[0-9]*:[0-9]*:/toolbox:x:$uid:$gid:/" /etc/passwd
	chown -R "$uid:$gid" /home/toolbox
	USER_IDS="$uid:$gid"
}

# Before the agent starts: its primary group (the socket's owner) is toolbox's gid.
step_user() {
	USER_IDS=1000:1000
	if [ -s "$CIDATA/user" ]; then
		read -r name uid gid <"$CIDATA/user"
		[ "$name" = toolbox ] || log "config drive user $name: the login user is always toolbox"
		set_user_ids "$uid" "$gid"
	fi
}

step_identity() {
	host=toolbox
	[ -s "$CIDATA/hostname" ] && read -r host <"$CIDATA/hostname"
	hostname "$host"
	echo "$host" >/etc/hostname
	printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$host" >/etc/hosts
	if [ -f "$CIDATA/authorized_keys" ]; then
		mkdir -p /home/toolbox/.ssh
		cp "$CIDATA/authorized_keys" /home/toolbox/.ssh/authorized_keys
		chmod 0700 /home/toolbox/.ssh
		chmod 0600 /home/toolbox/.ssh/authorized_keys
		chown -R "$USER_IDS" /home/toolbox/.ssh
	fi
	if [ -f "$CIDATA/ssh_host_ed25519_key" ]; then
		cp "$CIDATA/ssh_host_ed25519_key" "$CIDATA/ssh_host_ed25519_key.pub" /etc/ssh/
		chmod 0600 /etc/ssh/ssh_host_ed25519_key
		chmod 0644 /etc/ssh/ssh_host_ed25519_key.pub
		keysrc="from config drive"
	else
		ssh-keygen -q -t ed25519 -N '' -C "root@$host" -f /etc/ssh/ssh_host_ed25519_key
		keysrc=generated
	fi
	log "hostname $host, user toolbox $USER_IDS, host key $keysrc"
}

step_shares() {
	SHARES_LIB=1 . "$TB/shares"
	shares_mount
}

# --- network -------------------------------------------------------------------------

step_network() {
	ip link set lo up
	nic=
	for dir in /sys/class/net/*; do
		[ "${dir##*/}" != lo ] && { nic=${dir##*/}; break; }
	done
	if [ -z "$nic" ]; then
		log "network: no NIC"
		return
	fi
	ip link set "$nic" up
	# Returns with a lease (then renews it in the background), or goes to the background.
	udhcpc -i "$nic" -s "$TB/udhcpc.script" -t 20 -T 1 -b -p "$RUN/udhcpc.pid" \
		-x "hostname:$host" >/dev/null 2>&1
	addr=$(ip -4 -o addr show dev "$nic")
	addr=${addr#*inet }
	log "network: lo up, $nic ${addr%% *} (DHCP)"
}

# --- sshd ----------------------------------------------------------------------------

step_sshd() {
	mkdir -p /run/sshd
	chmod 0755 /run/sshd
	if /usr/sbin/sshd -E /var/log/sshd.log; then
		log "sshd started on port 22"
	else
		log "sshd failed to start (see /var/log/sshd.log)"
	fi
}

# --- guest agent ---------------------------------------------------------------------

# The agent starts right after sshd: under emulation its Python start-up and imports
# take seconds, which now overlap the data disk and the shared folders. It waits for
# $RUN/booted (step_agent_go) before it reads any state or starts containers. Its output
# goes through the link
# /var/log/toolbox-agent.log: to /run until the data disk is mounted, then to the data
# disk, which the agent reopens at the gate and the supervisor opens at each restart.
step_agent() {
	ln -sfn "$RUN/toolbox-agent.log" /var/log/toolbox-agent.log
	# The agent runs as root with primary group toolbox, so the socket it creates
	# (/run/toolbox/docker.sock, mode 0660) is open to the toolbox user.
	# glibc's malloc keeps its defaults: MALLOC_ARENA_MAX=2 with MALLOC_MMAP_THRESHOLD_=131072
	# saved ~1 MB of RSS after a pull but made pulls 1.4-1.65x slower under TCG (bench/README.md).
	# (The variables go through supervise's environment: no env exec, ~0.1 s each start.)
	# Its command line stays exactly "python3 -m toolbox_agent": that is how the docs, the
	# tests and the benchmarks find it (pkill -f '^python3 -m toolbox_agent').
	PYTHONPATH=/usr/lib/toolbox/agent TOOLBOX_AGENT_GATE="$RUN/booted" \
		TOOLBOX_AGENT_LOG=/var/log/toolbox-agent.log "$TB/supervise" agent /var/log/toolbox-agent.log \
		/usr/bin/setpriv --regid=toolbox --clear-groups -- python3 -m toolbox_agent &
	AGENT_SUP=$!
	log "guest agent started under supervision (waits for the data disk and the network)"
	acpid -c /etc/acpi -l /var/log/acpid.log -p "$RUN/acpid.pid"
}

step_agent_go() {
	logf="$DATA/log/toolbox-agent.log"
	if is_mounted "$DATA"; then
		cat "$RUN/toolbox-agent.log" >>"$logf" 2>/dev/null # what it wrote before the gate
	else
		logf="$RUN/toolbox-agent.log"
	fi
	ln -sfn "$logf" /var/log/toolbox-agent.log
	: >"$RUN/booted"
	log "guest agent released (log $logf)"
}

# --- Docker's engine (only in the VARIANT=docker image) ------------------------------

# dockerd starts its own containerd (state under its data root, on the data disk) and
# uses runc. No iptables rules: the benchmarks need no port publishing or container egress
# (pulls are made by dockerd itself), and the guest agent's engine is left alone.
step_docker() {
	[ -x /usr/sbin/dockerd ] || return 0
	mkdir -p "$DATA/docker"
	"$TB/supervise" dockerd /var/log/dockerd.log \
		/usr/sbin/dockerd -H unix:///run/docker.sock --group toolbox \
		--data-root "$DATA/docker" --exec-root /run/docker --pidfile /run/docker.pid \
		--iptables=false --ip-masq=false &
	log "dockerd + containerd started under supervision (socket /run/docker.sock, log /var/log/dockerd.log)"
}

step_ready() {
	while read -r key value _; do
		case "$key" in
		MemTotal:) total=$value ;;
		MemAvailable:) avail=$value ;;
		esac
	done </proc/meminfo
	log "ready (memory in use: $(((total - avail) / 1024)) MB of $((total / 1024)) MB)"
}

# --- shutdown ------------------------------------------------------------------------

# wait_gone PID TENTHS: wait for PID to exit, at most TENTHS tenths of a second.
wait_gone() {
	i=0
	while [ "$i" -lt "$2" ]; do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

shutdown() {
	[ -n "$SHUTTING_DOWN" ] && return
	SHUTTING_DOWN=$1
	log "shutdown ($1): stopping the guest agent"
	if [ -n "$AGENT_SUP" ]; then
		kill -TERM "$AGENT_SUP" 2>/dev/null
		wait_gone "$AGENT_SUP" 120
	fi
	log "stopping all processes"
	kill -TERM -1 2>/dev/null
	sleep 0.5
	kill -KILL -1 2>/dev/null
	sync
	if is_mounted "$DATA"; then
		umount "$DATA" 2>/dev/null || /usr/bin/umount -R "$DATA" 2>/dev/null ||
			mount -o remount,ro "$DATA"
		log "data disk unmounted"
	fi
	sync
	log "$1"
	"$1" -f
}
