"""Reading and writing weights: safetensors, model cards, and the saved-model folder."""
