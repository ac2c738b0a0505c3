"""
The twistd dropin for C{twistd pxe-pilot}; the service itself lives in L{pxepilot.tap}.
"""

from twisted.application.service import ServiceMaker

pxe_pilot = ServiceMaker(
    "pxe-pilot",
    "pxepilot.tap",
    "Network installation of Proxmox products: answer files, iPXE boot chain and TFTP.",
    "pxe-pilot",
)
