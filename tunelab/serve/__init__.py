"""tunelab.serve: the OpenAI-compatible HTTP API (`tunelab serve`).

Owns the FastAPI app with its key check and error shapes (server), the engine that loads
the base and adapters once and generates, streaming or not (engine), and the request and
response schemas (schemas). May import tunelab.eval, tunelab.models, tunelab.data,
tunelab.config, tunelab.util and tunelab.errors.
"""
