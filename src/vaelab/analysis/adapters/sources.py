"""Models named on the command line, opened and adapted: ``FILE.py:FACTORY`` (a plain PyTorch model), a diffusers
``save_pretrained`` folder, a pythae folder; and :class:`ModelSource`, how one was opened, kept as
``model-source.json`` beside its results so that it can be opened again. Every way one can be wrong (a missing
file, a factory that raises or returns something else, a folder of another model, outputs of the wrong shape or
range, a remembered file that has gone) is one :class:`vaelab.errors.RunError` line naming what was wrong and what is
accepted."""
from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaelab.analysis.adapters.diffusers import from_diffusers, load_diffusers
from vaelab.analysis.adapters.plain import DEFAULT_GAUSSIAN_STD, TorchModelAdapter, check_model, first_line, from_torch
from vaelab.analysis.adapters.pythae import from_pythae, load_pythae
from vaelab.data import Dataset, load_dataset
from vaelab.errors import RunError, VaelabError
from vaelab.fileio import atomic_write_json

FACTORY_ACCEPTS = ("a module with encode(x) and decode(z) methods, a pair (encoder, decoder) of callables, or a "
                   "model already adapted (vaelab.analysis.adapters.from_torch)")
MODEL_KINDS = ("model", "diffusers", "pythae")


@dataclass(frozen=True)
class TorchOptions:
    """How to read a plain PyTorch model (``--model``): see :func:`vaelab.analysis.adapters.from_torch`."""

    input_range: tuple[float, float] = (0.0, 1.0)
    likelihood: str | None = None  # None: bernoulli for images in [0, 1], gaussian otherwise
    decoder_output: str | None = None  # None: logits for bernoulli, mean for gaussian
    gaussian_std: float = DEFAULT_GAUSSIAN_STD
    clamp_output: bool = False

    @property
    def resolved_likelihood(self) -> str:
        if self.likelihood is not None:
            return self.likelihood
        return "bernoulli" if tuple(self.input_range) == (0.0, 1.0) else "gaussian"


def parse_factory(spec: str) -> tuple[Path, str]:
    """'FILE.py:FACTORY' -> (the file, the factory's name)."""
    path, colon, factory = spec.rpartition(":")
    if not colon or not path or not factory.isidentifier():
        raise RunError(f"--model {spec!r} is not FILE.py:FACTORY; expected e.g. --model my_vae.py:make, where make() "
                       "returns the model")
    return Path(path), factory


def call_factory(spec: str) -> Any:
    """Import FILE.py and return FACTORY()."""
    path, factory = parse_factory(spec)
    if not path.is_file():
        raise RunError(f"--model {spec}: {path} does not exist; expected FILE.py:FACTORY, a Python file defining "
                       f"{factory}()")
    name = f"vaelab_user_model_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise RunError(f"--model {spec}: {path} is not a Python file; expected FILE.py:FACTORY")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # (dataclasses and pickling look their module up by name)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's code, at import
        raise RunError(f"--model {spec}: importing {path} raised {type(exc).__name__} ({first_line(exc)}); "
                       f"expected a file that imports cleanly and defines {factory}()") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                         and getattr(v, "__module__", None) == name)
        raise RunError(f"--model {spec}: {path} defines no function {factory}(); it defines "
                       f"{', '.join(defined) or 'none'}; expected FILE.py:FACTORY with FACTORY() returning the model")
    try:
        return fn()
    except Exception as exc:  # the user's code
        raise RunError(f"--model {spec}: {factory}() raised {type(exc).__name__} ({first_line(exc)}); expected "
                       f"{factory}() to return {FACTORY_ACCEPTS}") from None


def is_latent_model(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("encode", "decode", "log_likelihood", "latent_shape", "image_shape"))


def adapt_torch(obj: Any, image_shape: tuple[int, int, int], options: TorchOptions, device: torch.device | str,
                spec: str = "the factory", probe: torch.Tensor | None = None) -> Any:
    """What a factory returned -> a checked LatentModel on ``device``, in eval mode."""
    if is_latent_model(obj):
        model = obj
    elif isinstance(obj, (tuple, list)) and len(obj) == 2 and all(callable(p) for p in obj):
        parts: tuple = tuple(p.to(device).eval() if isinstance(p, torch.nn.Module) else p for p in obj)
        return _from_torch(parts, image_shape, options, probe)
    elif callable(getattr(obj, "encode", None)) and callable(getattr(obj, "decode", None)):
        return _from_torch((obj.to(device).eval() if isinstance(obj, torch.nn.Module) else obj, None), image_shape,
                           options, probe)
    else:
        what = f"a {type(obj).__name__} of {len(obj)} values" if isinstance(obj, (tuple, list)) else type(obj).__name__
        raise RunError(f"--model {spec} returned {what}, which has no encode/decode; expected {FACTORY_ACCEPTS}")
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    return check_model(model, probe) if isinstance(model, TorchModelAdapter) else model


def _from_torch(parts: tuple, image_shape, options: TorchOptions, probe: torch.Tensor | None):
    likelihood = options.resolved_likelihood
    return from_torch(parts[0], parts[1], image_shape=image_shape, input_range=options.input_range,
                      likelihood=likelihood, decoder_output=options.decoder_output,
                      gaussian_std=options.gaussian_std, clamp_output=options.clamp_output, probe=probe)


def open_model(kind: str, where: str, image_shape: tuple[int, int, int], *, device: torch.device | str = "cpu",
               options: TorchOptions = TorchOptions(), gaussian_std: float = DEFAULT_GAUSSIAN_STD,
               probe: torch.Tensor | None = None) -> tuple[Any, str]:
    """(the adapted model, a name for it) from ``--model FILE.py:FACTORY``, ``--diffusers DIR`` or ``--pythae DIR``.

    image_shape: the dataset's images (C, H, W); the model must encode them. probe: a few of them, in [0, 1], for
    the one encode/decode that checks the model before any analysis runs."""
    if kind == "model":
        path, factory = parse_factory(where)
        return adapt_torch(call_factory(where), image_shape, options, device, where, probe), f"{path.stem}-{factory}"
    name = Path(where).resolve().name
    if kind == "diffusers":
        vae = load_diffusers(where, device)
        return from_diffusers(vae, image_shape=image_shape, gaussian_std=gaussian_std, probe=probe), name
    if kind == "pythae":
        return check_model(from_pythae(load_pythae(where, device)), probe), name
    raise RunError(f"model kind {kind!r} is not one of {', '.join(MODEL_KINDS)}")


# --- how a model was opened, remembered beside its results so `vaelab sample OUT` can open it again --------------
SOURCE_FILE = "model-source.json"  # in a --model/--diffusers/--pythae model's output folder
SOURCE_FORMAT = 1
FLAGS = {"model": "--model FILE.py:FACTORY", "diffusers": "--diffusers DIR", "pythae": "--pythae DIR"}


def absolute_where(kind: str, where: str | Path) -> str:
    """``where`` with its file or folder made absolute (FILE.py:FACTORY keeps its factory), so it holds from any
    working folder."""
    if kind == "model":
        path, factory = parse_factory(str(where))
        return f"{path.resolve()}:{factory}"
    return str(Path(where).resolve())


@dataclass(frozen=True)
class ModelSource:
    """How a model vaelab did not train was opened: ``kind`` (one of :data:`MODEL_KINDS`), ``where`` (FILE.py:FACTORY
    or a folder, absolute), the dataset ``data`` it was measured on, and the :class:`TorchOptions`. ``origin``: the
    file it was read from, when it was (named in errors)."""

    kind: str
    where: str
    data: str
    options: TorchOptions = TorchOptions()
    origin: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        return {"format": SOURCE_FORMAT, "kind": self.kind, "where": self.where, "data": self.data,
                "options": {**asdict(self.options), "input_range": list(self.options.input_range)}}

    def save(self, folder: str | Path) -> Path:
        """FOLDER/model-source.json, written atomically; returns its path."""
        path = Path(folder) / SOURCE_FILE
        atomic_write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "ModelSource | None":
        """What FOLDER/model-source.json remembers; None when there is no such file."""
        path = Path(folder) / SOURCE_FILE
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text())
            options = dict(meta["options"])
            options["input_range"] = tuple(float(v) for v in options["input_range"])
            source = cls(str(meta["kind"]), str(meta["where"]), str(meta["data"]), TorchOptions(**options), path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{path} is not a model source vaelab wrote ({type(exc).__name__}: {first_line(exc)}); "
                           f"give the model again with {', '.join(FLAGS.values())} and --data NAME") from None
        if meta.get("format") != SOURCE_FORMAT or source.kind not in MODEL_KINDS:
            raise RunError(f"{path} has format {meta.get('format')!r} and kind {source.kind!r}; this vaelab reads "
                           f"format {SOURCE_FORMAT} with kind {' | '.join(MODEL_KINDS)}")
        return source

    def check_remembered(self) -> None:
        """One line when the file or folder a model-source.json remembers has gone (before anything is loaded)."""
        path = parse_factory(self.where)[0] if self.kind == "model" else Path(self.where)
        if self.origin is None or (path.is_file() if self.kind == "model" else path.is_dir()):
            return
        raise RunError(f"{self.origin} remembers --{self.kind} {self.where}, but {path} is no longer there; give the "
                       f"model again with {FLAGS[self.kind]} (and --data NAME when it changed)")

    def open(self, device: torch.device | str = "cpu", probe_images: int = 64) -> tuple[Any, str, Dataset]:
        """(the adapted model, its name, the dataset it is measured on), checked on ``probe_images`` training images."""
        self.check_remembered()
        try:
            dataset = load_dataset(self.data)
        except VaelabError as exc:
            if self.origin is None:
                raise
            raise type(exc)(f"{self.origin} remembers --data {self.data}: {exc}") from None
        model, name = open_model(self.kind, self.where, dataset.image_shape, device=device, options=self.options,
                                 gaussian_std=self.options.gaussian_std, probe=dataset.x_train[:probe_images])
        return model, name, dataset
