"""
pxe-pilot's TFTP server: read-only, RFC 1350 with the option extensions of RFC 2347
(negotiation), 2348 (blksize), 2349 (timeout, tsize) and 7440 (windowsize).
"""
