"""
pxe-pilot's HTTP side: the Klein routes and the site that serves them.
"""
