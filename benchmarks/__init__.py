"""asv benchmarks of kpbench (see benchmarks/README.md)."""
