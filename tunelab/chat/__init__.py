"""tunelab.chat: what tunelab knows about the chat formats of model families.

Owns the family table (families: each family's chat template as tunelab ships it, the
special tokens it needs, the token that ends a turn, its think block and how Ollama's
Go template writes it; recognising the family of any template), the one set of token ids
that ends an answer (stops), and reasoning as records bring it and answers give it back
(reasoning). Every consumer (masks, evaluation stops, GGUF metadata, the Modelfile, the
server) asks here instead of knowing a family itself. May import tunelab.util and
tunelab.errors; it loads no model.
"""
