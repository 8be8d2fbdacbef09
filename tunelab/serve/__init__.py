"""tunelab.serve: the OpenAI-compatible HTTP API (`tunelab serve`).

Owns the FastAPI app with its key check and error shapes (server) and its cap on a
request body, counted as the bytes arrive (body_limit), the two engines
behind it: one base and its adapters with transformers (engine) or GGUF files with
llama.cpp (gguf_engine), what they share (jobs: the worker-thread jobs, the pending
limit, token ids to text), and the request and response schemas (schemas). May import
tunelab.deploy (llama_runtime: the llama.cpp the parity check uses), tunelab.eval,
tunelab.models, tunelab.data, tunelab.chat, tunelab.config, tunelab.util and tunelab.errors.
"""
