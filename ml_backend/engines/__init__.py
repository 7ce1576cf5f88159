"""Model engines behind one interface (base.py): in-process transformers, or an OpenAI-compatible server."""
