// Renders an Ollama Modelfile TEMPLATE with Go's text/template, the engine Ollama uses,
// over data shaped like Ollama's (.Messages of .Role/.Content, .System, .Prompt).
// stdin: {"template": "...", "messages": [{"role": "...", "content": "..."}]}; stdout: the prompt.
// Used by tests/test_modelfile.py; Ollama itself cannot be installed here.
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Request struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
}

type Values struct {
	Messages []Message
	System   string
	Prompt   string
	Response string
}

func main() {
	var request Request
	if err := json.NewDecoder(os.Stdin).Decode(&request); err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("modelfile").Parse(request.Template))
	if err := tmpl.Execute(os.Stdout, Values{Messages: request.Messages}); err != nil {
		panic(err)
	}
}
