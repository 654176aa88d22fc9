"""spquant: fully quantized, sparse spiking neural networks (SpQuant-SNN).

Train SNNs with ternary/low-bit weights and an integer (ternary) membrane potential, prune them
with spatial-channel gates guided by the membrane potential, count their true cost, and deploy
them as integer-only models that run bit-exactly.
"""

__version__ = "0.1.0"
