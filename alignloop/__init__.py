"""alignloop: online iterative preference alignment."""
__version__ = "0.1.0"
