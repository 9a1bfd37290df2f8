"""toolbox's guest agent: the container engine inside the VM."""
