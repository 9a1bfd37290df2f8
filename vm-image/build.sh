#!/bin/bash
# Build the toolbox guest image from Debian packages:
#   rootfs (mmdebstrap, this machine's apt sources) -> trimmed -> root.squashfs
#   kernel (Debian's generic amd64 kernel) + a busybox initramfs -> hybrid BIOS/UEFI ISO.
# Outputs in vm-image/out/: toolbox.iso vmlinuz initrd SHA256SUMS manifest.json.
# VARIANT=docker (make -C vm-image VARIANT=docker): the same image plus Debian's docker.io
# (dockerd, containerd, runc; packages-docker.txt), in vm-image/out-docker/, for benchmarks.
# Finished builds are cached by a hash of their inputs in
# ${TOOLBOX_BUILD_CACHE:-$HOME/.cache/toolbox/images}/<hash>/; a cached build is copied.
# TOOLBOX_IMAGE_OUT replaces the output directory (check-reproducible.sh builds twice).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
VARIANT=${VARIANT:-}
case "$VARIANT" in
'') OUT=${TOOLBOX_IMAGE_OUT:-$HERE/out} ;;
docker) OUT=${TOOLBOX_IMAGE_OUT:-$HERE/out-docker} ;;
*)
	echo "unknown VARIANT '$VARIANT' (known: docker)" >&2
	exit 2
	;;
esac
CACHE_ROOT=${TOOLBOX_BUILD_CACHE:-$HOME/.cache/toolbox/images}
# shellcheck source=image.env
. "$HERE/image.env"
export SOURCE_DATE_EPOCH LC_ALL=C.UTF-8 TZ=UTC
OUTPUTS="toolbox.iso vmlinuz initrd"

log() { printf '[vm-image %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# shellcheck source=lib/rootfs.sh
. "$HERE/lib/rootfs.sh"
# shellcheck source=lib/boot.sh
. "$HERE/lib/boot.sh"

# Install the build tools a fresh Debian 12 machine lacks (we run as root).
ensure_tools() {
	local need=() pair
	for pair in mmdebstrap:mmdebstrap mksquashfs:squashfs-tools xorriso:xorriso \
		grub-mkimage:grub-common mformat:mtools cpio:cpio zstd:zstd xz:xz-utils \
		python3:python3; do
		command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
	done
	[ -d /usr/lib/grub/i386-pc ] || need+=(grub-pc-bin)
	[ -d /usr/lib/grub/x86_64-efi ] || need+=(grub-efi-amd64-bin)
	[ ${#need[@]} -eq 0 ] && return
	log "installing build tools: ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
}

# Content hash of everything the image is made from (documentation aside).
input_hash() {
	(cd "$REPO" && find vm-image guest-agent -type f \
		! -path 'vm-image/out/*' ! -path 'vm-image/out-*/*' ! -path '*/__pycache__/*' \
		! -name '*.pyc' ! -name '*.md' -print0 |
		LC_ALL=C sort -z | xargs -0 sha256sum; echo "variant=$VARIANT") | sha256sum | cut -c1-64
}

write_manifest() { # DIR VERSION
	local dir=$1 version=$2
	(cd "$dir" && sha256sum $OUTPUTS >SHA256SUMS)
	python3 - "$dir" "$version" <<'EOF'
import hashlib, json, os, sys
d, version = sys.argv[1], sys.argv[2]
files = {}
for name in ("toolbox.iso", "vmlinuz", "initrd"):
    p = os.path.join(d, name)
    with open(p, "rb") as f:
        files[name] = {"sha256": hashlib.file_digest(f, "sha256").hexdigest(), "size": os.path.getsize(p)}
with open(os.path.join(d, "cmdline.txt")) as f:
    cmdline = f.read().strip()
manifest = {"format": 1, "name": "toolbox", "version": version, "arch": "x86_64",
            "cmdline": cmdline, "files": files}
with open(os.path.join(d, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
EOF
}

publish() { # CACHEDIR
	rm -rf "$OUT"
	mkdir -p "$OUT"
	cp "$1"/{toolbox.iso,vmlinuz,initrd,cmdline.txt,SHA256SUMS,manifest.json} "$OUT/"
}

main() {
	ensure_tools
	local hash cached version work
	hash=$(input_hash)
	cached="$CACHE_ROOT/$hash"
	[ "${1:-}" = --rebuild ] && rm -rf "$cached"
	if [ -f "$cached/manifest.json" ]; then
		log "cached build $hash"
		publish "$cached"
		return
	fi
	version="$VERSION+${hash:0:12}"
	work=$(mktemp -d "${TMPDIR:-/var/tmp}/toolbox-image.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$work'" EXIT
	log "building $version${VARIANT:+ (variant $VARIANT)} in $work"
	build_rootfs "$work"
	install_kernel_modules "$work"
	customize_rootfs "$work"
	trim_rootfs "$work/rootfs"
	build_initramfs "$work"
	build_iso "$work"
	mkdir -p "$work/result"
	cp "$work/iso.out" "$work/result/toolbox.iso"
	cp "$work/iso/boot/vmlinuz" "$work/result/vmlinuz"
	cp "$work/iso/boot/initrd.img" "$work/result/initrd"
	cp "$work/iso/boot/cmdline.txt" "$work/result/cmdline.txt"
	write_manifest "$work/result" "$version"
	mkdir -p "$CACHE_ROOT"
	# A build of the same inputs may have finished meanwhile (two checkouts building at
	# once): keep the first, whose bytes are the same, and publish it.
	mv -T "$work/result" "$cached" 2>/dev/null || log "cached meanwhile by another build: $hash"
	publish "$cached"
	log "done: $(du -h "$OUT/toolbox.iso" | cut -f1) toolbox.iso, version $version"
}

main "$@"
