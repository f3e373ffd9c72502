"""Vision models: CLIP image-text embeddings, similarity and zero-shot classification."""
