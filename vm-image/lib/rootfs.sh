# Root filesystem stages of build.sh (sourced): mmdebstrap, kernel modules, the toolbox
# overlay and user, then trimming what a read-only guest never reads.

INIT_APPLETS="acpid awk cat chmod chown cmp cp cut findfs grep head hostname ip kill ln mkdir
	modprobe mount poweroff reboot rm sed sleep sync udhcpc umount"

# packages.txt, plus packages-$VARIANT.txt for a variant build.
packages() {
	cat "$HERE/packages.txt" ${VARIANT:+"$HERE/packages-$VARIANT.txt"} |
		grep -v -e '^#' -e '^[[:space:]]*$' | sort -u | paste -sd, -
}
module_list() { grep -v -e '^#' -e '^[[:space:]]*$' "$1"; }

build_rootfs() { # WORK
	local work=$1
	log "mmdebstrap $SUITE: $(packages)"
	# The customize hook runs on the build host with mmdebstrap's APT_CONFIG, so the
	# kernel comes from the same package lists as the root filesystem.
	mmdebstrap --mode=root --variant=essential --quiet \
		--aptopt='APT::Install-Recommends "false"' \
		--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/lintian/*' \
		--dpkgopt='path-exclude=/usr/share/bash-completion/*' \
		--include="$(packages)" \
		--customize-hook="cd '$work' && apt-get download -q \$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print \$2; exit}')" \
		"$SUITE" "$work/rootfs"
}

# Debian's kernel package, unpacked beside the rootfs; only the modules listed in
# modules-rootfs.txt (and what they depend on) go into the image, decompressed so that
# busybox insmod and kmod both load them.
install_kernel_modules() { # WORK
	local work=$1 root=$1/rootfs kver mod rel
	dpkg-deb -x "$work"/linux-image-*.deb "$work/kernel"
	kver=$(ls "$work/kernel/lib/modules")
	echo "$kver" >"$work/kver"
	log "kernel $kver"
	mkdir -p "$root/tmp/kmods/lib/modules"
	cp -a "$work/kernel/lib/modules/$kver" "$root/tmp/kmods/lib/modules/"
	chroot "$root" depmod -b /tmp/kmods "$kver"
	mkdir -p "$root/lib/modules/$kver"
	for mod in $(module_list "$HERE/modules-rootfs.txt"); do
		chroot "$root" modprobe -d /tmp/kmods -S "$kver" --show-depends "$mod" 2>/dev/null ||
			log "warning: module $mod not found"
	done | awk '$1 == "insmod" {print $2}' | sort -u | while read -r mod; do
		rel=${mod#/tmp/kmods/lib/modules/$kver/}
		mkdir -p "$(dirname "$root/lib/modules/$kver/$rel")"
		cp "$root$mod" "$root/lib/modules/$kver/$rel"
	done
	find "$root/lib/modules/$kver" -name '*.ko.xz' -exec xz -d {} +
	cp "$work/kernel/lib/modules/$kver"/modules.{builtin,builtin.modinfo,order} "$root/lib/modules/$kver/"
	rm -rf "$root/tmp/kmods"
	chroot "$root" depmod "$kver"
	cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
}

customize_rootfs() { # WORK
	local root=$1/rootfs
	cp -a "$HERE/rootfs/." "$root/"
	chown -R 0:0 "$root/etc/sudoers.d" "$root/etc/ssh" "$root/usr/lib/toolbox" "$root/usr/sbin"
	chmod 0440 "$root/etc/sudoers.d/toolbox"
	chmod 0644 "$root/etc/ssh/sshd_config"
	ln -sfn /usr/lib/toolbox/init "$root/sbin/init"
	# busybox applets for init's boot path, ahead of the dynamically linked tools in PATH.
	mkdir -p "$root/usr/lib/toolbox/bin"
	for applet in $INIT_APPLETS; do
		ln -sfn /bin/busybox "$root/usr/lib/toolbox/bin/$applet"
	done
	# The login user: no password at all ('*': no password matches, yet sshd does not
	# treat the account as locked), keys only. init gives it the Mac user's uid/gid.
	chroot "$root" useradd --create-home --user-group --uid 1000 --shell /bin/bash toolbox
	chroot "$root" usermod --password '*' toolbox
	rm -f "$root"/etc/ssh/ssh_host_*
	# The guest agent, byte-compiled once (hash-based .pyc: independent of mtimes).
	mkdir -p "$root/usr/lib/toolbox/agent"
	cp -r "$REPO/guest-agent/toolbox_agent" "$root/usr/lib/toolbox/agent/"
	find "$root/usr/lib/toolbox/agent" -name __pycache__ -prune -exec rm -rf {} +
	chroot "$root" python3 -m compileall -q --invalidation-mode unchecked-hash /usr/lib/toolbox/agent
	echo toolbox >"$root/etc/hostname"
	: >"$root/etc/machine-id"
}

# A program and the libraries it links, in the order an exec reads them.
exec_files() { # ROOT PROGRAM
	echo "$2"
	chroot "$1" ldd "$2" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
}

# Every file the agent reads at start-up (byte code, extension modules), in the order
# it imports them.
agent_files() { # ROOT
	chroot "$1" env PYTHONPATH=/usr/lib/toolbox/agent python3 -c '
import importlib.util, os, sys
from toolbox_agent.lean import ssl_hidden
with ssl_hidden():  # as the agent imports them (lean.py)
    import toolbox_agent.app
    toolbox_agent.app.import_parts()
for m in list(sys.modules.values()):  # in the order the imports began
    f = getattr(m, "__file__", None)
    if f and f.endswith(".py"):
        f = importlib.util.cache_from_source(f)  # the agent keeps its sources: .pyc beside
    if f and os.path.isfile(f):
        print(f)'
}

# What init reads ahead on the other CPU while it boots (the squashfs is xz: the first
# read of a file is the slow part of an exec or an import), in the order the boot needs
# it: sshd, the agent's python (started right after sshd), what the agent imports, the
# ip and nft it runs when released.
write_readahead() { # ROOT
	local root=$1
	{
		exec_files "$root" /usr/sbin/sshd
		exec_files "$root" /usr/bin/python3.11
		agent_files "$root" || log "warning: agent imports not listed for readahead"
		exec_files "$root" /usr/sbin/ip
		exec_files "$root" /usr/sbin/nft
	} | awk '!seen[$0]++' >"$root/usr/lib/toolbox/readahead.list"
	log "readahead: $(wc -l <"$root/usr/lib/toolbox/readahead.list") files"
}

# drop_unlinked_libs ROOT SONAME...: remove each library that no other file in the root
# names (no ELF lists it as NEEDED, no script or config mentions it).
drop_unlinked_libs() {
	local root=$1 soname users
	shift
	for soname; do
		users=$(grep -rlF --exclude="$soname*" --exclude=ld.so.cache "$soname" "$root"/usr "$root"/etc 2>/dev/null | head -3 || true)
		if [ -n "$users" ]; then
			log "keeping $soname (named by ${users//$root/})"
		else
			rm -f "$root"/usr/lib/x86_64-linux-gnu/"$soname"*
		fi
	done
}

# Remove what a read-only, package-manager-free guest never reads. Kept: the copyright
# files and dpkg's status database (the list of what is inside).
trim_rootfs() { # ROOT
	local root=$1
	rm -rf "$root"/usr/share/{man,info,locale,lintian,linda,bash-completion,zsh,bug,menu,gcc,gdb}
	rm -rf "$root"/usr/share/{perl,perl5} "$root"/usr/lib/x86_64-linux-gnu/perl* \
		"$root"/usr/lib/x86_64-linux-gnu/libperl.so* "$root"/usr/bin/perl*
	rm -rf "$root"/usr/lib/x86_64-linux-gnu/gconv "$root"/usr/include
	find "$root/usr/lib" -name '*.a' -delete
	rm -rf "$root"/usr/lib/python3.11/{ensurepip,idlelib,lib2to3,tkinter,turtledemo,pydoc_data,test,config-3.11-x86_64-linux-gnu}
	rm -f "$root"/usr/lib/python3.11/lib-dynload/{_test,_ctypes_test,xxlimited,_xxtestfuzz,_dbm}*
	# CJK codecs (the guest speaks UTF-8) and Berkeley DB (only PAM's unused pam_userdb).
	rm -f "$root"/usr/lib/python3.11/lib-dynload/_codecs_{cn,hk,iso2022,jp,kr,tw}.* \
		"$root"/usr/lib/x86_64-linux-gnu/libdb-5.3.so "$root"/usr/lib/x86_64-linux-gnu/security/pam_userdb.so
	# Client-side and admin tools nobody runs inside the guest (sshd needs none of them:
	# keysign, the FIDO and PKCS#11 helpers serve the ssh client and ssh-agent).
	rm -f "$root"/usr/bin/{openssl,ssh,scp,sftp,ssh-add,ssh-agent,ssh-keyscan,slogin,pzstd,localedef,cvtsudoers} \
		"$root"/usr/bin/dpkg* "$root"/usr/sbin/{sudo_logsrvd,tipc,devlink,ldconfig,debugfs} \
		"$root"/usr/lib/openssh/{ssh-keysign,ssh-pkcs11-helper,ssh-sk-helper}
	# sshd reads moduli only for diffie-hellman-group-exchange, which our clients never
	# pick (curve25519 first); without the file it falls back to a fixed group.
	rm -f "$root"/etc/ssh/moduli
	# Python modules that cannot run here (turtle needs tkinter) or that nothing imports
	# (the agent's imports are listed in readahead.list), then libraries no program links.
	rm -rf "$root"/usr/lib/python3.11/{turtle.py,pydoc.py,distutils,curses,sqlite3,dbm} \
		"$root"/usr/lib/python3.11/_distutils_system_mod.py \
		"$root"/usr/lib/python3.11/lib-dynload/{_curses,_curses_panel,_sqlite3,audioop,ossaudiodev,_dbm,_gdbm}.*
	drop_unlinked_libs "$root" libstdc++.so.6 libmvec.so.1 libsqlite3.so.0
	# Python's standard library (and h11) as byte code only: half the size, imports as fast;
	# tracebacks into the standard library show no source lines. The agent keeps its sources.
	find "$root"/usr/lib/python3.11 "$root"/usr/lib/python3/dist-packages -name __pycache__ -prune -exec rm -rf {} +
	chroot "$root" python3 -m compileall -q -b -j 1 /usr/lib/python3.11 /usr/lib/python3/dist-packages >/dev/null || true
	find "$root"/usr/lib/python3.11 "$root"/usr/lib/python3/dist-packages -name '*.py' -exec sh -c \
		'for f; do [ -f "${f}c" ] && rm "$f"; done' sh {} +
	write_readahead "$root"
	rm -rf "$root"/var/lib/dpkg/info "$root"/var/lib/apt "$root"/var/cache/* "$root"/var/log/*
	rm -rf "$root"/etc/apt "$root"/usr/share/doc-base
	find "$root/tmp" "$root/run" -mindepth 1 -delete
}
