"""Split-computing testbed: network namespaces, shaped links, CPU-limited edge (root only)."""
