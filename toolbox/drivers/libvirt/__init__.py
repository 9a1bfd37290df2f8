"""The libvirt driver: libvirt's QEMU (HVF on macOS, KVM or TCG on Linux) through libvirt-python."""
