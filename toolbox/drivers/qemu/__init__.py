"""The QEMU driver: command (pure argv), qmp (control socket), process (pid file), driver."""
