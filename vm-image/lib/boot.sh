# Boot stages of build.sh (sourced): the initramfs, the squashfs root and the hybrid
# BIOS/UEFI ISO. Every file is stamped with SOURCE_DATE_EPOCH so the bytes repeat.

CMDLINE="console=ttyS0,115200 quiet cgroup_no_v1=all transparent_hugepage=never"

stamp() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }

build_initramfs() { # WORK
	local work=$1 root=$1/rootfs stage=$1/initramfs kver mod rel applet
	kver=$(cat "$work/kver")
	rm -rf "$stage"
	mkdir -p "$stage"/{bin,dev,proc,sys,medium,lower,rw,newroot,lib/modules/"$kver"}
	cp "$root/bin/busybox" "$stage/bin/busybox"
	for applet in $("$stage/bin/busybox" --list); do
		[ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
	done
	mknod -m 600 "$stage/dev/console" c 5 1
	mknod -m 666 "$stage/dev/null" c 1 3
	# The storage drivers and what they depend on, with their lines of modules.dep, so
	# that one busybox modprobe loads them all.
	module_list "$HERE/modules-initramfs.txt" >"$stage/lib/modules/load.list"
	for mod in $(cat "$stage/lib/modules/load.list"); do
		chroot "$root" modprobe -S "$kver" --show-depends "$mod"
	done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' | while read -r mod; do
		rel=${mod#/lib/modules/$kver/}
		mkdir -p "$(dirname "$stage/lib/modules/$kver/$rel")"
		cp "$root$mod" "$stage/lib/modules/$kver/$rel"
		grep "^$rel:" "$root/lib/modules/$kver/modules.dep"
	done >"$stage/lib/modules/$kver/modules.dep"
	install -m 0755 "$HERE/initramfs/init" "$stage/init"
	stamp "$stage"
	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
		cpio --quiet -o -H newc -R 0:0 --reproducible) | zstd -q -19 -T1 >"$work/initrd.img"
	log "initramfs: $(wc -l <"$stage/lib/modules/$kver/modules.dep") modules, $(du -h "$work/initrd.img" | cut -f1)"
}

build_iso() { # WORK
	local work=$1 iso=$1/iso
	mkdir -p "$iso"/{boot/grub,live}
	# 512 KiB blocks: the kernel keeps 3 fragment blocks + one block and one xz dictionary
	# per CPU in RAM for as long as the root is mounted (1 MiB blocks: ~7 MB with 2 CPUs),
	# and every cache miss decompresses a whole block. 256 KiB costs 1 MB more ISO.
	log "squashfs (xz)"
	stamp "$work/rootfs"
	mksquashfs "$work/rootfs" "$iso/live/root.squashfs" -noappend -quiet -no-progress \
		-comp xz -Xbcj x86 -b 512K -no-exports -processors 2 >/dev/null
	cp "$work/vmlinuz" "$iso/boot/vmlinuz"
	cp "$work/initrd.img" "$iso/boot/initrd.img"
	echo "$CMDLINE" >"$iso/boot/cmdline.txt"
	cat >"$iso/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
set default=0
menuentry "toolbox" {
	linux /boot/vmlinuz $CMDLINE
	initrd /boot/initrd.img
}
EOF
	stamp "$iso"
	log "ISO (grub-mkrescue, BIOS + UEFI)"
	grub-mkrescue -o "$work/iso.out" --compress=xz --fonts= --locales= --themes= \
		--install-modules="linux normal iso9660 serial terminal search search_label search_fs_uuid part_msdos part_gpt configfile echo test all_video" \
		"$iso" -- -volid TOOLBOX -padding 0 2>"$work/grub-mkrescue.log" ||
		{ cat "$work/grub-mkrescue.log" >&2; return 1; }
}
