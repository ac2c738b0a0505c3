"""\nEvery host pxe-pilot has seen: its state, its timeline, and the reports that move it on.\n"""
