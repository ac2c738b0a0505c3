"""
Answer files: where they live, which one a machine gets, and whether the installer can
read it.
"""
