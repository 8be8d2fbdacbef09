"""tunelab.models: where the base model comes from and how a trained one is loaded.

Owns resolving `model.base` (built-in name, local folder, GGUF, hub id) and materialising
it once as a safetensors folder (source) with the chat template `model.chat_template`
chooses and the tokens it needs (templates), and loading a base with or without an adapter,
4/8-bit or not, plus the tunelab_train.json record beside a trained model (loading).
May import tunelab.chat, tunelab.config, tunelab.util and tunelab.errors.
"""
