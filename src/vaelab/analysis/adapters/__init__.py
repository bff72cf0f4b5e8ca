"""Adapters that let the analyses measure models vaelab did not train.

- :class:`TorchModelAdapter` and :func:`from_torch` (:mod:`.plain`): a module with ``encode``/``decode`` or two
  callables; the encoder may return ``mu``, ``(mu, logvar)``, a ``torch.distributions.Normal`` or
  ``Independent(Normal)``, or an object with ``.mean`` and ``.logvar``/``.std``/``.stddev``; latents of any shape;
  decoder outputs as tensors or objects with ``.sample``; images in [0, 1] or another ``input_range``.
- :func:`from_pythae` (:mod:`.pythae`): a trained pythae (benchmark_VAE) VAE-family model.
- :func:`from_diffusers` (:mod:`.diffusers`): a diffusers ``AutoencoderKL``, over the scaled latent the diffusion
  model sees.
- :func:`open_model` (:mod:`.sources`): the models the command line names (``--model FILE.py:FACTORY``,
  ``--diffusers DIR``, ``--pythae DIR``); :class:`ModelSource` remembers how one was opened (``model-source.json``
  in its output folder), so ``vaelab sample`` can open it again.
"""
from vaelab.analysis.adapters.diffusers import from_diffusers, load_diffusers
from vaelab.analysis.adapters.plain import DECODER_OUTPUTS, DEFAULT_GAUSSIAN_STD, TorchModelAdapter, from_torch
from vaelab.analysis.adapters.pythae import from_pythae, load_pythae
from vaelab.analysis.adapters.sources import MODEL_KINDS, SOURCE_FILE, ModelSource, TorchOptions, open_model

__all__ = ["DECODER_OUTPUTS", "DEFAULT_GAUSSIAN_STD", "MODEL_KINDS", "SOURCE_FILE", "ModelSource", "TorchModelAdapter",
           "TorchOptions", "from_diffusers", "from_pythae", "from_torch", "load_diffusers", "load_pythae", "open_model"]
