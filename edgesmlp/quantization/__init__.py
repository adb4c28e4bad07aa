"""INT8 quantization: post-training (PTQ) per target."""
