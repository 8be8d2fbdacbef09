"""Deploy: the tuned model as files llama.cpp and Ollama run, and proof they still do the task.

Owns the GGUF conversion (llama.cpp's own convert scripts and quantizer, plus the
SentencePiece scores its converter leaves out without a tokenizer.model: spm_vocab), the
Ollama Modelfile (a Go template for each shape of chat template), the llama.cpp runtime
(llama-cpp-python) that the parity check and `tunelab serve --gguf` share, with the build
of its wheel (llama_wheel: run by `make setup`, standard library only), and the parity
check itself (task metrics, agreement with transformers, prompt-token equality, speed).
May import tunelab.adapters, tunelab.eval, tunelab.models, tunelab.data, tunelab.chat,
tunelab.config, tunelab.util and tunelab.errors.
"""
