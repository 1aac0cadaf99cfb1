"""Checkpoint interop: HuggingFace (PyTorch-layout safetensors) import and export."""
