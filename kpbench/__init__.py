"""kpbench: benchmarks and reproductions for kernel products and Sinkhorn divergences."""
__version__ = "0.1.0"
