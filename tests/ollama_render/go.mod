module tunelab/ollama_render

go 1.19
