"""starchart: run chat LLMs and CLIP on your own machine."""

__version__ = "0.1.0"
