"""``starchart models``: pull from the Hugging Face hub, list, inspect, name, remove.

- ``names``: what a model name and a hub reference (``REPO[:QUANT_OR_FILE]``) may be.
- ``selection``: which of a repository's files a model needs (shared by the hub
  listing and the local cache).
- ``integrity``: a truncated, empty or corrupt GGUF / safetensors file, named.
- ``catalog``: the names starchart knows (``STARCHART_HOME/models.json``) and
  where each one's files are.
- ``hub``: ``models pull`` through ``huggingface_hub`` into the standard HF cache.
- ``inspect``: what ``models list`` and ``models info`` show.
- ``command``: the CLI group.
"""
