"""Storage shared by the PyPI and conda sides: safe paths, atomic writes, single-flight verified downloads."""
