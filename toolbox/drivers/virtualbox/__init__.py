"""The VirtualBox driver: VBoxManage, through toolbox.run (the subprocess choke point)."""
