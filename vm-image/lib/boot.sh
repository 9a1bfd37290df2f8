# Boot stages of build.sh (sourced): the initramfs, the squashfs root and the hybrid
# BIOS/UEFI ISO. Every file is stamped with SOURCE_DATE_EPOCH so the bytes repeat.

CMDLINE="console=ttyS0,115200 quiet cgroup_no_v1=all transparent_hugepage=never no_timer_check"

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

# GRUB modules built into both core images (no module files on the medium): find the ISO
# by its volume label, read its grub.cfg, boot the kernel with a serial console.
GRUB_MODULES="linux normal configfile iso9660 search search_label serial terminal echo test
	part_msdos part_gpt all_video"
VOLID=TOOLBOX

# The squashfs root, in mksquashfs's sorted order, every time and its own stamp fixed.
# 512 KiB blocks: the kernel keeps 3 fragment blocks + one block and one xz dictionary
# per CPU in RAM for as long as the root is mounted (1 MiB blocks: ~7 MB with 2 CPUs),
# and every cache miss decompresses a whole block. 256 KiB costs 1 MB more ISO.
build_squashfs() { # WORK
	local work=$1
	log "squashfs (xz)"
	stamp "$work/rootfs"
	squashfs_sort "$work/rootfs" >"$work/squashfs.sort"
	# (mksquashfs refuses SOURCE_DATE_EPOCH beside the explicit times: these say it all.)
	env -u SOURCE_DATE_EPOCH mksquashfs "$work/rootfs" "$work/iso/live/root.squashfs" -noappend -quiet -no-progress \
		-comp xz -Xbcj x86 -b 256K -no-exports -processors 2 -reproducible -sort "$work/squashfs.sort" \
		-mkfs-time "$SOURCE_DATE_EPOCH" -all-time "$SOURCE_DATE_EPOCH" >/dev/null
}

# mksquashfs's sort file: what init reads ahead at boot (readahead.list) goes first, in
# that order. Small files share xz fragment blocks, and reading one decompresses its whole
# block: the agent's ~200 start-up modules, packed among the thousands of the standard
# library, cost ~4 s of decompression under TCG for 4 MB of byte code. Packed together in
# import order, each block is decompressed once.
squashfs_sort() { # ROOT
	local root=$1 prio=32767 f
	{ chroot "$root" xargs readlink -e <"$root/usr/lib/toolbox/readahead.list" || true; } | awk '!seen[$0]++' |
		while read -r f; do
			echo "${f#/} $prio"
			prio=$((prio - 1))
		done
}

# GRUB's two core images by grub-mkimage (what grub-mkrescue made, without its clock,
# random GUIDs and uuid search): the BIOS El Torito image, and BOOTX64.EFI in a FAT ESP
# image with a fixed serial and label; mtools dates every entry SOURCE_DATE_EPOCH.
build_grub() { # WORK
	local work=$1 iso=$1/iso esp=$1/iso/boot/grub/efi.img sectors
	printf 'search --no-floppy --set=root --label %s\nset prefix=($root)/boot/grub\n' "$VOLID" \
		>"$work/grub-early.cfg"
	# shellcheck disable=SC2086 # GRUB_MODULES is a word list
	grub-mkimage -O i386-pc-eltorito -p /boot/grub -c "$work/grub-early.cfg" \
		-o "$iso/boot/grub/bios.img" biosdisk $GRUB_MODULES
	# shellcheck disable=SC2086
	grub-mkimage -O x86_64-efi -p /boot/grub -c "$work/grub-early.cfg" \
		-o "$work/BOOTX64.EFI" $GRUB_MODULES
	touch -d "@$SOURCE_DATE_EPOCH" "$work/BOOTX64.EFI"
	# The EFI binary plus 64 KiB for the FAT, in whole 32 KiB cylinders (2 heads x 32 sectors).
	sectors=$((($(stat -c %s "$work/BOOTX64.EFI") / 1024 + 64 + 31) / 32 * 64))
	rm -f "$esp"
	export MTOOLS_SKIP_CHECK=1
	mformat -C -i "$esp" -T "$sectors" -h 2 -s 32 -N 746f6f6c -v TOOLBOXEFI ::
	mmd -i "$esp" ::/EFI ::/EFI/BOOT
	mcopy -m -i "$esp" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
}

# The hybrid ISO: El Torito BIOS (+ GRUB's hybrid MBR) and UEFI (the ESP as an El Torito
# image and a GPT partition), every volume date and the GPT GUIDs from SOURCE_DATE_EPOCH.
build_iso() { # WORK
	local work=$1 iso=$1/iso vdate
	mkdir -p "$iso"/{boot/grub,live}
	build_squashfs "$work"
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
	log "GRUB (grub-mkimage: BIOS El Torito, UEFI ESP)"
	build_grub "$work"
	stamp "$iso"
	vdate=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S00)
	log "ISO (xorriso, BIOS + UEFI)"
	xorriso -no_rc -report_about SORRY \
		-volume_date c "$vdate" -volume_date m "$vdate" -volume_date x default -volume_date f default \
		-volume_date uuid "$vdate" -volume_date all_file_dates set_to_mtime \
		-as mkisofs -o "$work/iso.out" -V "$VOLID" -r -graft-points -no-pad \
		-b boot/grub/bios.img -no-emul-boot -boot-load-size 4 -boot-info-table \
		--grub2-boot-info --grub2-mbr /usr/lib/grub/i386-pc/boot_hybrid.img \
		-eltorito-alt-boot -e boot/grub/efi.img -no-emul-boot -efi-boot-part --efi-boot-image \
		--protective-msdos-label -c boot/boot.catalog --sort-weight 0 / --sort-weight 1 /boot \
		"$iso" 2>"$work/xorriso.log" || { cat "$work/xorriso.log" >&2; return 1; }
}
