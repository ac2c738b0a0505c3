"""
Hostile clients: what an attacker or a broken client on the LAN does to pxe-pilot, and
what must hold (a normal client is still served, nothing is served truncated, no state
changes). Each module reproduces a way pxe-pilot was once made to fail:

- C{test_bodies}: huge bodies and bodies listing more interfaces than a machine has;
- C{test_answer_files}: answer files being written while installers ask for them;
- C{test_forged_changes}: another site's page making a browser re-arm a host;
- C{test_host_records}: made-up MAC addresses filling the host ledger and its pages;
- C{test_tftp}: TFTP floods, spoofed and not, and slow readers;
- C{test_http_connections}: slowloris, downloads nobody reads, connection floods, the
  descriptor limit.

They assert behaviour, never timings, and the whole package runs in well under a minute.
"""
