"""The loops around the model: `train` (resumable, distributed), `evaluate`, `predict`, the
`demo` (a config run through `train`, then drawn and exported) and `visualize`."""
