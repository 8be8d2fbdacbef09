"""tunelab.util: small helpers with no knowledge of fine-tuning that every layer shares:
atomic file writes and JSON/JSONL reading, JSON text parsed with each failure in words
(``files``), the machine a run used (``machine``), and names and dotted keys (``names``:
the one did-you-mean hint, dotted-key lookup and flattening). It may import only
tunelab.errors."""
