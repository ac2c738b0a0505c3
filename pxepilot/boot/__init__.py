"""
The boot chain: the assets catalogue, the iPXE scripts, and what each machine boots.
"""
