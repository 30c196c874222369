"""Safe, atomic checkpoints: safetensors tensors + a JSON sidecar; loading runs no code."""
