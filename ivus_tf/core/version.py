"""The package version, in one place (`ivus_tf.__version__`, setup.py and every file that records it read it)."""

__version__ = "0.1.0"
