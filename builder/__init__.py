"""Versioned preference datasets for the Self-Rewarding Language Models loop."""

__version__ = "0.1.0"
