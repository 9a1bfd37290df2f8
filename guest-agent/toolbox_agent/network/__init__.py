"""Container networking: bridges, IPAM, network namespaces, NAT, published ports, DNS."""
