"""catlab: cross-scale alignment in multi-scale GANs (the CAT method)."""
__version__ = "0.1.0"
