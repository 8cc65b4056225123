"""CascadeNER in pure PyTorch."""
