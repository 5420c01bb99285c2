"""tumord: brain MRI scan classification with a numpy neural network, run as a folder-watching service."""

__version__ = "0.1.0"
