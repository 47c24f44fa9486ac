"""CPU-scale few-shot reproduction on Fashion-MNIST: data, evaluator, CLIP-style teacher (issue 7)."""
