# Steps of the toolbox init, sourced by /usr/lib/toolbox/init (bash, PID 1).
# Each step logs what it did; a failing step logs and lets the boot go on, so that
# sshd comes up whenever it can.

CIDATA="$RUN/cidata"
AGENT_SUP=
SOCK_GROUP=toolbox

# --- mounts --------------------------------------------------------------------------

step_mounts() {
	mkdir -p /dev/pts /dev/shm "$RUN"
	mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
	mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
	ln -sfn /proc/self/fd /dev/fd
	ln -sfn /proc/self/fd/0 /dev/stdin
	ln -sfn /proc/self/fd/1 /dev/stdout
	ln -sfn /proc/self/fd/2 /dev/stderr
	log "proc, sys, dev, devpts, shm mounted"
	# cgroup v2 only (the kernel runs with cgroup_no_v1=all), every controller delegated.
	mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
	local c controllers
	controllers=$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)
	for c in $controllers; do
		echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || log "cgroup2: cannot enable $c"
	done
	log "cgroup2 mounted at /sys/fs/cgroup (subtree: $(cat /sys/fs/cgroup/cgroup.subtree_control))"
	echo 0 >/proc/sys/kernel/ctrl-alt-del # ctrl-alt-del -> SIGINT to us, not an instant reset
	modprobe -a -q evdev button virtio_net e1000 virtio_rng ext4 overlay 2>/dev/null
	log "modules loaded"
}

# --- data disk -----------------------------------------------------------------------

# The first whole disk with no partition table and no filesystem, or nothing.
first_empty_disk() {
	local sys name
	for sys in /sys/block/vd* /sys/block/sd*; do
		[ -e "$sys" ] || continue
		name=${sys##*/}
		[ "$(cat "$sys/ro")" = 0 ] && [ "$(cat "$sys/size")" != 0 ] || continue
		compgen -G "$sys/$name*" >/dev/null && continue # has partitions
		blkid -p "/dev/$name" >/dev/null 2>&1 && continue # has a signature
		echo "/dev/$name"
		return 0
	done
	return 1
}

step_data_disk() {
	mkdir -p "$DATA"
	local dev
	dev=$(blkid -c /dev/null -o device -t LABEL=toolbox-data | head -n 1)
	if [ -z "$dev" ]; then
		if dev=$(first_empty_disk); then
			log "formatting empty disk $dev as ext4 (label toolbox-data)"
			mkfs.ext4 -q -F -L toolbox-data -m 0 "$dev" || { log "mkfs.ext4 $dev failed"; dev=; }
		fi
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
	local dev
	dev=$(blkid -c /dev/null -o device -t LABEL=cidata | head -n 1)
	[ -n "$dev" ] || dev=$(blkid -c /dev/null -o device -t LABEL=CIDATA | head -n 1)
	mkdir -p "$CIDATA"
	if [ -z "$dev" ] || ! mount -t iso9660 -o ro "$dev" "$CIDATA"; then
		log "no config drive: own host key, nobody can log in"
		return
	fi
	log "config drive $dev mounted (version $(head -n 1 "$CIDATA/version" 2>/dev/null))"
	if [ -f "$CIDATA/agent.json" ]; then
		install -m 0600 "$CIDATA/agent.json" "$RUN/agent.json"
		mkdir -p /etc/toolbox
		ln -sfn "$RUN/agent.json" /etc/toolbox/agent.json
	fi
}

# --- hostname, user, keys, mounts ----------------------------------------------------

set_user_ids() {
	local uid=$1 gid=$2 owner
	owner=$(getent passwd "$uid" | cut -d: -f1)
	if [ -n "$owner" ] && [ "$owner" != toolbox ]; then
		log "uid $uid belongs to $owner: toolbox keeps uid $(id -u toolbox)"
		uid=$(id -u toolbox)
	fi
	owner=$(getent group "$gid" | cut -d: -f1)
	if [ -z "$owner" ]; then
		groupmod -g "$gid" toolbox
	elif [ "$owner" != toolbox ]; then
		log "gid $gid is group $owner: used as toolbox's primary group"
	fi
	usermod -u "$uid" -g "$gid" -a -G toolbox toolbox
	chown -R "$uid:$gid" /home/toolbox
}

mount_shares() {
	local type tag path mode opts
	while read -r type tag path mode; do
		case "$type" in '' | '#'*) continue ;; esac
		mkdir -p "$path"
		case "$type" in
		9p)
			modprobe -q 9pnet_virtio; modprobe -q 9p
			opts="trans=virtio,version=9p2000.L,msize=512000,$mode"
			;;
		vboxsf)
			modprobe -q vboxsf
			opts="uid=$(id -u toolbox),gid=$(id -g toolbox),$mode"
			;;
		*)
			log "mount $tag: unknown type $type, skipped"
			continue
			;;
		esac
		if mount -t "$type" -o "$opts" "$tag" "$path"; then
			log "mounted $type $tag at $path ($mode)"
		else
			log "mount $type $tag at $path failed"
		fi
	done <"$CIDATA/mounts"
}

step_identity() {
	local host=toolbox name uid gid
	[ -s "$CIDATA/hostname" ] && read -r host <"$CIDATA/hostname"
	hostname "$host"
	echo "$host" >/etc/hostname
	printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$host" >/etc/hosts
	if [ -s "$CIDATA/user" ]; then
		read -r name uid gid <"$CIDATA/user"
		[ "$name" = toolbox ] || log "config drive user $name: the login user is always toolbox"
		set_user_ids "$uid" "$gid"
	fi
	if [ -f "$CIDATA/authorized_keys" ]; then
		install -d -m 0700 -o toolbox -g "$(id -g toolbox)" /home/toolbox/.ssh
		install -m 0600 -o toolbox -g "$(id -g toolbox)" "$CIDATA/authorized_keys" /home/toolbox/.ssh/
	fi
	if [ -f "$CIDATA/ssh_host_ed25519_key" ]; then
		install -m 0600 "$CIDATA/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
		install -m 0644 "$CIDATA/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
		log "hostname $host, user toolbox $(id -u toolbox):$(id -g toolbox), host key from config drive"
	else
		ssh-keygen -q -t ed25519 -N '' -C "root@$host" -f /etc/ssh/ssh_host_ed25519_key
		log "hostname $host, user toolbox $(id -u toolbox):$(id -g toolbox), host key generated"
	fi
	[ -f "$CIDATA/mounts" ] && mount_shares
}

# --- network -------------------------------------------------------------------------

step_network() {
	ip link set lo up
	local nic
	for nic in /sys/class/net/*; do
		nic=${nic##*/}
		[ "$nic" != lo ] && break
		nic=
	done
	if [ -z "$nic" ]; then
		log "network: no NIC"
		return
	fi
	ip link set "$nic" up
	# Returns with a lease (then renews it in the background), or goes to the background.
	busybox udhcpc -i "$nic" -s "$TB/udhcpc.script" -t 20 -T 1 -A 5 -b \
		-p "$RUN/udhcpc.pid" -x "hostname:$(hostname)" >/dev/null 2>&1
	log "network: $nic $(ip -4 -o addr show dev "$nic" | awk '{print $4}' | head -n 1) (DHCP), lo up"
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

step_agent() {
	local logf="$DATA/log/toolbox-agent.log"
	mountpoint -q "$DATA" || logf="$RUN/toolbox-agent.log"
	ln -sfn "$logf" /var/log/toolbox-agent.log
	# The agent runs as root with primary group toolbox, so the socket it creates
	# (/run/toolbox/docker.sock, mode 0660) is open to the toolbox user.
	"$TB/supervise" agent "$logf" \
		setpriv --regid=toolbox --clear-groups -- \
		env PYTHONPATH=/usr/lib/toolbox/agent python3 -m toolbox_agent &
	AGENT_SUP=$!
	log "guest agent started under supervision (log $logf)"
	busybox acpid -c /etc/acpi -l /var/log/acpid.log -p "$RUN/acpid.pid"
}

step_ready() {
	local total avail
	total=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
	avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
	log "ready (memory in use: $(((total - avail) / 1024)) MB of $((total / 1024)) MB)"
}

# --- shutdown ------------------------------------------------------------------------

# wait_gone PID TENTHS: wait for PID to exit, at most TENTHS tenths of a second.
wait_gone() {
	local i
	for ((i = 0; i < $2; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
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
	if mountpoint -q "$DATA"; then
		umount -R "$DATA" 2>/dev/null || mount -o remount,ro "$DATA"
		log "data disk unmounted"
	fi
	sync
	log "$1"
	busybox "$1" -f
}
