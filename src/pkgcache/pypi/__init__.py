"""The PyPI side: PEP 503/691 simple pages, PEP 658 metadata, distribution files."""
