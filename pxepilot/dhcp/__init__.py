"""
proxyDHCP: network boot without touching the network's DHCP server.
"""
