"""A fix, fitted once and kept: :func:`fit_sampler` fits one of the catalogue's fixes (the ex-post Gaussian, the
ex-post Gaussian mixture, the two-stage VAE) to a model's training codes exactly as the analyses do
(:class:`vaelab.analysis.samplers.source.LatentSource`), and returns a :class:`FittedSampler` that draws latents
(n, D), decodes them, and saves itself to a folder that :meth:`FittedSampler.load` reads back without refitting.

A saved fix is a folder of two files, written atomically (the tensors first, the JSON last, so a folder with a
``sampler.json`` is complete):

    tensors.safetensors   subspace.basis (D, k), subspace.eigenvalues (k,), complement.mean (D,), complement.sd (D,),
                          and the model of the informative coordinates: gmm.weights (K,), gmm.means (K, k),
                          gmm.covariances ((K, k, k) full or (K, k) diagonal), gmm.precisions_cholesky (same shape);
                          or two_stage.mean (k,), two_stage.std (k,), two_stage.net.<parameter> (the second stage's
                          weights); float64 for the mixture (draws are bit-for-bit those before saving), float32 else
    sampler.json          format, sampler, options (threshold, max_informative, gmm_components, fit_points, seed),
                          latent_shape, latent_dim, informative_dims, the mixture's or the two-stage VAE's settings,
                          and fitted_on (number of codes, seed, the model's identity: run path and checkpoint epoch
                          when there is one)

Drawing: ``z = V u + w``, u (n, k) from the fitted model of the informative coordinates and w (n, D) from the
complement's diagonal Gaussian projected off V; the same seed gives the same latents before and after saving.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from sklearn.mixture import GaussianMixture

from vaelab.analysis.adapters.sources import SOURCE_FILE, ModelSource
from vaelab.analysis.framework.common import decode_means, generator
from vaelab.analysis.framework.subject import Subject, from_model, from_run
from vaelab.analysis.samplers.catalogue import FIXES, SAMPLERS
from vaelab.analysis.samplers.source import ComplementGaussian, ExPostGMM, latent_source
from vaelab.analysis.samplers.two_stage import SecondStage, TwoStageVAE
from vaelab.analysis.stats.codes import Subspace
from vaelab.errors import ConfigError, RunError
from vaelab.fileio import atomic_write_bytes, atomic_write_json
from vaelab.plotting import pyplot, tile_images
from vaelab.runs import Run

FORMAT = 1
SAVEABLE = FIXES  # the samplers that are fitted after training, and so can be kept
TENSORS, META = "tensors.safetensors", "sampler.json"
FIXES_FOLDER = Path("fixes")  # under a run (or a diagnosis' output folder), beside analysis/: fixes/<sampler>/
# The options of a fit and their defaults: those of the quality analysis, so a fix fitted here is the one it measures.
DEFAULTS = {"fit_points": 10000, "threshold": 0.01, "max_informative": 64, "gmm_components": 10, "seed": 0}


def check_saveable(name: str) -> None:
    """One line naming the samplers that can be fitted and saved, when ``name`` is not one of them."""
    if name not in SAVEABLE:
        kind = "is not a sampler" if name not in SAMPLERS else "is not fitted, so there is nothing to save"
        raise ConfigError(f"sampler {name!r} {kind}; the samplers that can be fitted and saved are "
                          f"{', '.join(SAVEABLE)}")


def fix_folder(root: str | Path, name: str) -> Path:
    """Where a run's (or a diagnosis output folder's) saved fix ``name`` lives: ROOT/fixes/NAME."""
    return Path(root) / FIXES_FOLDER / name


@dataclass
class FittedSampler:
    """One fitted fix: the informative subspace V (D, k), the model of the coordinates u = V^T z (an
    :class:`ExPostGMM` or a :class:`TwoStageVAE`; None when k = 0), and the complement's diagonal Gaussian.
    ``model`` is the VAE whose decoder :meth:`images` uses (None after :meth:`load` unless one is given)."""

    name: str
    subspace: Subspace
    fix: ExPostGMM | TwoStageVAE | None
    complement: ComplementGaussian
    options: dict
    latent_shape: tuple[int, ...]
    fitted_on: dict = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def latent_dim(self) -> int:
        return self.subspace.latent_dim

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """n latents z (n, D) float32 on the CPU, ready for the model's decoder; the same seed, the same latents."""
        if n < 1:
            raise ConfigError(f"the number of samples must be at least 1, got {n}")
        u = self.fix.sample(n, seed=seed) if self.fix is not None else torch.zeros((n, 0))
        return self.subspace.combine(u, self.complement.sample(n, generator(seed)))

    def images(self, n: int, seed: int = 0) -> torch.Tensor:
        """n decoded images (n, C, H, W) in [0, 1]: the likelihood means of :meth:`sample`'s latents."""
        if self.model is None:
            raise RunError("decoding needs the model: pass it to FittedSampler.load(folder, model=...)")
        return decode_means(self.model, self.sample(n, seed))

    # --- saving ------------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write tensors.safetensors then sampler.json into ``folder`` (each atomically); returns the folder."""
        folder = Path(folder)
        tensors = {"subspace.basis": self.subspace.basis, "subspace.eigenvalues": self.subspace.eigenvalues,
                   "complement.mean": self.complement.mean, "complement.sd": self.complement.sd}
        meta = {"format": FORMAT, "sampler": self.name, "options": self.options, "latent_shape": list(self.latent_shape),
                "latent_dim": self.latent_dim, "informative_dims": self.subspace.k, "fitted_on": self.fitted_on,
                "subspace": {"threshold": self.subspace.threshold, "above_threshold": self.subspace.above_threshold,
                             "capped": self.subspace.capped}}
        if isinstance(self.fix, ExPostGMM):
            gmm = self.fix.gmm
            tensors.update({f"gmm.{key}": torch.from_numpy(np.ascontiguousarray(getattr(gmm, key + "_")))
                            for key in ("weights", "means", "covariances", "precisions_cholesky")})
            meta["gmm"] = {"n_components": int(gmm.n_components), "covariance_type": gmm.covariance_type,
                           "seed": self.fix.seed}
        elif isinstance(self.fix, TwoStageVAE):
            t = self.fix
            tensors.update({"two_stage.mean": t.mean, "two_stage.std": t.std,
                            **{f"two_stage.net.{k}": v for k, v in t.net.state_dict().items()}})
            meta["two_stage"] = {"hidden": list(t.hidden), "latent_dim": t.net.decoder.n_in,
                                 "activation": t.activation, "gamma_init": t.gamma_init, "seed": t.seed,
                                 "history": t.history}
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        atomic_write_bytes(folder / TENSORS, save_tensors(tensors))
        atomic_write_json(folder / META, meta)
        return folder

    @classmethod
    def load(cls, folder: str | Path, model: Any = None) -> "FittedSampler":
        """Read a folder written by :meth:`save`; nothing is refitted. ``model``: the VAE for :meth:`images`."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / META).read_text())
            tensors = load_tensors((folder / TENSORS).read_bytes())
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"{folder} is not a saved sampler ({META} and {TENSORS}): {exc}") from None
        if meta.get("format") != FORMAT:
            raise RunError(f"{folder / META} has format {meta.get('format')!r}; this vaelab reads format {FORMAT}")
        s = meta["subspace"]
        subspace = Subspace(tensors["subspace.basis"], tensors["subspace.eigenvalues"], s["threshold"],
                            s["above_threshold"], s["capped"])
        complement = ComplementGaussian(subspace)
        complement.mean, complement.sd = tensors["complement.mean"], tensors["complement.sd"]
        fix = None
        if "gmm" in meta:
            g = meta["gmm"]
            fix = ExPostGMM(g["n_components"], g["covariance_type"], seed=g["seed"])
            fix.gmm = GaussianMixture(g["n_components"], covariance_type=g["covariance_type"], random_state=g["seed"])
            for key in ("weights", "means", "covariances", "precisions_cholesky"):
                setattr(fix.gmm, key + "_", tensors[f"gmm.{key}"].numpy())
        elif "two_stage" in meta:
            t = meta["two_stage"]
            fix = TwoStageVAE(hidden=tuple(t["hidden"]), latent_dim=t["latent_dim"], seed=t["seed"],
                              gamma_init=t["gamma_init"], activation=t["activation"])
            fix.mean, fix.std, fix.history = tensors["two_stage.mean"], tensors["two_stage.std"], t["history"]
            fix.net = SecondStage(fix.mean.numel(), t["latent_dim"], fix.hidden, fix.activation, fix.gamma_init)
            prefix = "two_stage.net."
            fix.net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            fix.net.eval()
        return cls(meta["sampler"], subspace, fix, complement, meta["options"], tuple(meta["latent_shape"]),
                   meta["fitted_on"], model)


def as_subject(model, data=None) -> Subject:
    """A Subject from what :func:`fit_sampler` accepts: a Subject, a run directory, or a model and its Dataset."""
    if isinstance(model, Subject):
        return model
    if isinstance(model, (str, Path)):
        return from_run(model)
    if data is None:
        raise ConfigError("fit_sampler needs the training images: fit_sampler(model, data, name) with a "
                          "vaelab.Dataset (or pass a run directory or a Subject)")
    return from_model(model, data)


def fit_sampler(model, data=None, name: str = "ex-post-gmm", *, fit_points: int = DEFAULTS["fit_points"],
                threshold: float = DEFAULTS["threshold"], max_informative: int = DEFAULTS["max_informative"],
                gmm_components: int = DEFAULTS["gmm_components"], seed: int = DEFAULTS["seed"]) -> FittedSampler:
    """Fit the fix ``name`` (one of :data:`SAVEABLE`) to the codes of up to ``fit_points`` training images.

    model: a vaelab model or adapter model (with ``data``, a :class:`vaelab.Dataset`), a run directory, or a
        :class:`vaelab.analysis.Subject` (``data`` ignored). The fit is the one the quality analysis makes with the
        same options (shared through the subject's cache when it already made it).
    threshold, max_informative: the informative subspace (eigenvalues of Cov_x[mu] above ``threshold``, at most
        ``max_informative`` directions). gmm_components: the mixture's components (ex-post-gmm). seed: the codes'
        subsample, the draw of q(z) fitted to, and the fit itself."""
    check_saveable(name)
    subject = as_subject(model, data)
    source, used = latent_source(subject, fit_points=fit_points, seed=seed, threshold=threshold,
                                 max_informative=max_informative, neighbourhood_scale=1.0,
                                 gmm_components=gmm_components)
    fix = source.fix(name)
    options = {"fit_points": used, "threshold": threshold, "max_informative": max_informative,
               "gmm_components": gmm_components, "seed": seed}
    identity = json.loads(json.dumps(dict(subject.source), default=str))  # what an adapter says, as JSON
    fitted_on = {"codes": used, "seed": seed, "model": subject.name, "source": identity}
    return FittedSampler(name, source.subspace, fix, source.complement(), options,
                         tuple(int(s) for s in subject.model.latent_shape), fitted_on, subject.model)


def save_fixes(subject: Subject, folder: str | Path, names=SAVEABLE, **options) -> dict[str, Path]:
    """Fit (or take from the subject's cache) and save each fix under folder/<name>/; returns where each went."""
    return {name: fit_sampler(subject, None, name, **options).save(Path(folder) / name) for name in names}


# --- what `vaelab sample` reads: a saved fix, a diagnosis' folder, or a run ---------------------------------------
def default_sampler(path: str | Path) -> str:
    """The fix a diagnosis in ``path`` named best (analysis/diagnosis.json), else the ex-post mixture."""
    try:
        best = json.loads((Path(path) / "analysis" / "diagnosis.json").read_text())["result"].get("best_fix")
    except (OSError, ValueError, KeyError, AttributeError):
        best = None
    return best if best in SAVEABLE else "ex-post-gmm"


def remembered_source(path: str | Path) -> ModelSource | None:
    """How the model of a diagnosis output folder (or of a fix saved in one, OUT/fixes/NAME) was opened, from its
    model-source.json; None when there is none (a run directory, a fix saved elsewhere)."""
    path = Path(path)
    inside = path.parent.parent if path.parent.name == FIXES_FOLDER.name else None
    for folder in (path, inside):
        if folder is not None and (folder / SOURCE_FILE).is_file():
            return ModelSource.load(folder)
    return None


def with_model(fitted: FittedSampler, source: ModelSource, device: str | torch.device) -> FittedSampler:
    """``fitted`` with the model ``source`` opens, which must have the latent the fix was fitted on."""
    model, _, _ = source.open(device)
    dim = math.prod(int(s) for s in model.latent_shape)
    if dim != fitted.latent_dim:
        raise RunError(f"--{source.kind} {source.where} has a latent of {dim} dimensions {tuple(model.latent_shape)}, "
                       f"but the {fitted.name} fix was fitted on {fitted.latent_dim}; give the model it was fitted on")
    fitted.model = model
    return fitted


def open_fix(path: str | Path, name: str, *, log: Callable[[str], None] = lambda m: None,
             source: ModelSource | None = None, device: str | torch.device = "cpu") -> FittedSampler:
    """The fix ``name`` for ``path``, loaded when it was saved, never refitted then:

    - a run directory: RUN/fixes/NAME loaded with the run's model (newest checkpoint); when the run has none,
      fitted with the quality analysis' defaults and saved there, so the next call loads it;
    - the output folder of a diagnosis of a model vaelab did not train: OUT/fixes/NAME, with the model opened again
      as OUT/model-source.json remembers (fitted and saved there when missing, as for a run);
    - a saved fix's folder (sampler.json): loaded, with the model of the diagnosis folder it sits in, if any;
    - anything without a model (a fix saved elsewhere, a folder without model-source.json): latents only.

    source: open this model instead of the remembered one (not for a run directory, which has its own)."""
    check_saveable(name)
    path = Path(path)
    if source is not None and (path / "config.yaml").is_file():
        raise ConfigError(f"{path} is a vaelab run, which decodes with its own model; --{source.kind} goes with the "
                          "output folder of a --model/--diffusers/--pythae diagnosis or a saved fix")
    if (path / META).is_file():
        fitted = FittedSampler.load(path)
        if fitted.name != name:
            raise ConfigError(f"{path} holds the {fitted.name!r} sampler, not {name!r}")
        source = source or remembered_source(path)
        return with_model(fitted, source, device) if source is not None else fitted
    folder = fix_folder(path, name)
    if not (path / "config.yaml").is_file():
        source = source or remembered_source(path)
        if (folder / META).is_file():
            fitted = FittedSampler.load(folder)
            return with_model(fitted, source, device) if source is not None else fitted
        if source is None:
            raise RunError(f"{path} is not a vaelab run, a diagnosis folder with {FIXES_FOLDER / name} or "
                           f"{SOURCE_FILE}, or a saved sampler ({META})")
        log(f"{path} has no saved {name}; fitting it now and saving it in {folder}")
        model, model_name, dataset = source.open(device)
        fitted = fit_sampler(from_model(model, dataset, name=model_name, out_dir=path), None, name)
        fitted.save(folder)
        return fitted
    if not (folder / META).is_file():
        log(f"{path} has no saved {name} (run `vaelab diagnose {path}` to save every fix); fitting it now and "
            f"saving it in {folder}")
        fitted = fit_sampler(path, None, name)
        fitted.save(folder)
        return fitted
    model, used = Run(path).load_model_and_source(device)
    fitted = FittedSampler.load(folder, model)
    was = fitted.fitted_on.get("source", {}).get("checkpoint_epoch")
    if was is not None and used.get("checkpoint_epoch") != was:
        log(f"warning: {folder} was fitted on the checkpoint of epoch {was}; the run's newest is epoch "
            f"{used.get('checkpoint_epoch')} (run `vaelab diagnose {path}` again to refit)")
    return fitted


def write_grid(images: torch.Tensor, path: str | Path) -> None:
    """Images (n, C, H, W) in [0, 1] as one PNG mosaic (grey or RGB), written atomically."""
    tile = np.clip(tile_images(images.numpy()), 0, 1)
    buf = io.BytesIO()
    pyplot().imsave(buf, tile, cmap="gray" if tile.ndim == 2 else None, vmin=0, vmax=1, format="png")
    atomic_write_bytes(path, buf.getvalue())


def write_npz(path: str | Path, z: torch.Tensor, images: torch.Tensor | None, fitted: FittedSampler, seed: int) -> None:
    """latents (n, D), latent_shape, sampler, seed, and images (n, C, H, W) when decoded; written atomically."""
    arrays = {"latents": z.numpy(), "latent_shape": np.asarray(fitted.latent_shape), "sampler": np.asarray(fitted.name),
              "seed": np.asarray(seed)}
    if images is not None:
        arrays["images"] = images.numpy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
