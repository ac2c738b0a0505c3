"""
pxe-pilot-builder: turns a Proxmox ISO into the boot assets pxe-pilot serves.
"""
