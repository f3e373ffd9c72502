"""What the HTTP API and the terminal chat call: chat, stored conversations, CLIP.

``store/`` keeps things; this package decides what happens with them.
"""
