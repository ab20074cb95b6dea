"""Model registry (being built)."""
SIZES = {"tiny": None, "small": None, "S": None, "B": None, "M": None, "H": None}
DISCRIMINATORS = {"scalewise": None, "aggregated": None, "concat": None}
