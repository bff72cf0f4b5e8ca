"""Adapters that let the analyses measure models vaelab did not train.

- :class:`TorchModelAdapter` (:mod:`.plain`): any pair of callables, ``encoder(x) -> (mu, logvar)`` (or ``mu`` alone
  for a deterministic autoencoder) and ``decoder(z) -> likelihood parameters`` (logits, probabilities or means).
- :func:`from_pythae` (:mod:`.pythae`): a trained pythae (benchmark_VAE) VAE-family model.
"""
from vaelab.analysis.adapters.plain import DECODER_OUTPUTS, TorchModelAdapter
from vaelab.analysis.adapters.pythae import from_pythae

__all__ = ["DECODER_OUTPUTS", "TorchModelAdapter", "from_pythae"]
