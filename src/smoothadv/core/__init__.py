"""The bottom layer: typed errors and warnings, input validation, and the one image I/O module.

Everything else in smoothadv imports from here; nothing here imports from the rest of the package.
"""
