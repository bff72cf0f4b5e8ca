"""Vectorised training: M runs that differ only in their seed, trained as one model.

The members' parameters are stacked along a new leading dimension (:class:`StackedStep`, the step function the
training loop of vaelab.trainer drives here instead of a single run's), and one step runs every member at once:

- folded (every parameter is a linear layer's, as in documents 002 and 003): the members' batches are folded into one
  batch of M x B examples that a copy of the model runs through, its linear layers replaced by :class:`StackedLinear`
  (each member's rows times that member's weights, one batched product); everything between the layers (activations,
  posterior, likelihood, prior, objective) works per example and runs once over the M x B examples;
- otherwise (a prior or likelihood with parameters of its own), ``torch.func.vmap`` over
  ``torch.func.functional_call``, which maps every operation over the members.

Folding needs fewer, larger operations than vmap, which maps every operation and copies around each batched product:
8 members of documents 002's and 003's MLPs trained 2-24% faster folded (median 8%; benchmarks/README.md). Each
member keeps its own random generator and draws exactly what a separate run draws, in the same order: the epoch's
binarization and batch order, then the reparameterisation noise of every step (drawn outside the stacked step and
passed in). One fused Adam over the stacked tensors is M independent Adams, since Adam is element-wise. So a member
follows the same trajectory as a separate run, up to floating-point rounding of batched against single matrix
products (which Adam amplifies where a gradient is near zero; tests/test_ensemble.py).

bf16 runs step under the same autocast as a separate run. A folded layer adds its bias in bf16, as a single run's
addmm does: on digits, bf16 members were bit-identical to their separate runs. Under vmap, autocast adds the bias in
float32, so a bf16 member differs from its separate run about as much as a bf16 run differs from an fp32 one.

Every member writes an ordinary run directory (config, metrics, checkpoints with its own unstacked weights and Adam
state, snapshots, status); any of them can later be resumed, analysed or reported like a run trained alone, also
from a checkpoint written inside an epoch.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vaelab.config import RunConfig
from vaelab.data import Dataset
from vaelab.errors import TrainingDiverged
from vaelab.objectives import Objective
from vaelab.runs import CheckpointStore, Run
from vaelab.session import training_session
from vaelab.trainer import fit, log_to_stderr, recover_run
from vaelab.training_step import Member, NotVectorisable, noise_shape


def vectorise_reason(configs: list[RunConfig]) -> str | None:
    """None when ``configs`` can be trained as one vectorised model, else why not."""
    if len(configs) < 2:
        return "fewer than two runs"
    ref = configs[0].model_dump(mode="json")
    ref["name"] = None
    ref["train"]["seed"] = None
    for c in configs[1:]:
        d = c.model_dump(mode="json")
        d["name"] = None
        d["train"]["seed"] = None
        if d != ref:
            return "the runs differ in more than their seed"
    c = configs[0]
    if c.model.network != "mlp":
        return "only MLP networks are vectorised"
    if c.train.trace_every:
        return "traced runs are trained one by one"
    return None


class _ObjectiveOf(nn.Module):
    """model + objective as one module, so functional_call can swap in each member's parameters."""

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: torch.Tensor, eps: torch.Tensor, progress: float):
        terms = self.objective(self.model, x, eps, progress)
        return terms.bound, terms.recon, terms.kl


class _Rows:
    """The examples per member in the current step (B), shared by a folded model's stacked layers."""

    per_member = 0


class StackedLinear(nn.Module):
    """M linear layers as one: weight (M, in, out) and bias (M, out), the stacked parameters of the members' layers.

    Input (R, in) holds G blocks of M x B rows, member-major within a block (G = 1 for the encoder's M x B images, G =
    K for the decoder's K samples of each): member m's rows of every block go through member m's weights, in one
    batched product. Output (R, out) in the input's row order."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter, rows: _Rows):
        super().__init__()
        self.weight, self.bias, self.rows = weight, bias, rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, b = self.weight.shape[0], self.rows.per_member
        g = x.shape[0] // (m * b)
        if x.dim() != 2 or g * m * b != x.shape[0]:
            raise RuntimeError(f"a folded linear layer got input {tuple(x.shape)}, not (G x {m} x {b}, in)")
        if g == 1:
            return torch.baddbmm(self.bias.unsqueeze(1), x.view(m, b, -1), self.weight).view(m * b, -1)
        xs = x.view(g, m, b, -1).transpose(0, 1).reshape(m, g * b, -1)
        y = torch.baddbmm(self.bias.unsqueeze(1), xs, self.weight)  # (M, G x B, out)
        return y.view(m, g, b, -1).transpose(0, 1).reshape(g * m * b, -1)


class _MemberMajor(nn.Module):
    """A folded decoder run member-major: its input (G x M x B, ...) (G = K samples of each member's B images, the
    objective's order) is reordered once to (M x G x B, ...), so every stacked layer inside takes member m's G x B rows
    as one block (no reordering around each layer), and the output is put back in the input's order. Each layer then
    multiplies exactly the rows it did when it reordered its own input, in the same order: bit-identical results, at
    two reorderings of the whole decoder instead of two per layer, forward and backward."""

    def __init__(self, inner: nn.Module, members: int, rows: _Rows):
        super().__init__()
        self.inner, self.members, self.rows = inner, members, rows

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m, b = self.members, self.rows.per_member
        g = z.shape[0] // (m * b)
        if g == 1:
            return self.inner(z)
        by_member = z.view(g, m, b, *z.shape[1:]).transpose(0, 1).reshape(z.shape)
        self.rows.per_member = g * b  # member m's G x B rows, one block to each stacked layer
        try:
            y = self.inner(by_member)
        finally:
            self.rows.per_member = b
        return y.view(m, g, b, *y.shape[1:]).transpose(0, 1).reshape(y.shape)


def fold_reason(models: list[nn.Module]) -> str | None:
    """None when the members can be folded into one batch (every parameter a linear layer's, equal buffers)."""
    linear = {id(p) for mod in models[0].modules() if isinstance(mod, nn.Linear) for p in mod.parameters()}
    if any(id(p) not in linear for p in models[0].parameters()):
        return "a parameter outside the linear layers"
    if any(mod.bias is None for mod in models[0].modules() if isinstance(mod, nn.Linear)):
        return "a linear layer without bias"
    buffers = [dict(model.named_buffers()) for model in models]
    if any(not torch.equal(b[n], buffers[0][n]) for b in buffers[1:] for n in buffers[0]):
        return "the members' buffers differ"
    return None


class StackedStep:
    """The step function of M seeds (see vaelab.training_step.StepFunction): their parameters stacked along a new
    leading dimension, one step folded (the members' batches as one batch through stacked linear layers) or through
    vmap over functional_call, each member's noise from its own generator. The members must be at the same point of
    training (epoch and step), else NotVectorisable."""

    def __init__(self, members: list[Member], objective: Objective, steps_left: int = 0):
        """(The stacked step is not compiled: ``train.compile`` does not apply; recorded as ``compiled: false``.)"""
        points = sorted({(m.start_epoch, m.step_in_epoch) for m in members})
        if len(points) > 1:
            where = ", ".join(f"epoch {e}" + (f" step {s}" if s else "") for e, s in points)
            raise NotVectorisable(f"the runs are at different points of training ({where})")
        models = self.models = [m.model for m in members]
        self.config, self.latent_dim = members[0].config, models[0].latent_dim
        wrapper = _ObjectiveOf(models[0], objective)
        # each member's parameters by the wrapper's names, looked up once (also the targets of sync)
        self.member_params = [dict(_ObjectiveOf(model, objective).named_parameters()) for model in models]
        member_buffers = [dict(_ObjectiveOf(model, objective).named_buffers()) for model in models]
        self.names = list(self.member_params[0])
        # Linear weights (out, in) are stored transposed, (M, in, out): the batched matrix products then write their
        # weight gradients straight into the parameter's layout (stored as (M, out, in), every step paid two strided
        # copies of the gradient, about a third of the step). Adam is element-wise, so the layout changes nothing else.
        self.flip = [self.member_params[0][n].dim() == 2 for n in self.names]
        self.trained = nn.ParameterList([
            nn.Parameter(torch.stack([_layout(mp[n].detach(), f) for mp in self.member_params]).contiguous())
            for n, f in zip(self.names, self.flip)])
        self.objective, self.rows = objective, _Rows()
        self.folded = self._fold(models) if fold_reason(models) is None else None
        if self.folded is None:
            self.buffers = {n: torch.stack([mb[n] for mb in member_buffers]) for n in member_buffers[0]}

            def member_terms(params, buffers, x, eps, progress):
                return torch.func.functional_call(wrapper, (params, buffers), (x, eps, progress))

            self.batched = torch.func.vmap(member_terms, in_dims=(0, 0, 0, 0, None), randomness="error")
        self.compiled, self.compile_probe = False, None

    def _fold(self, models: list[nn.Module]) -> nn.Module:
        """A copy of the first member's model whose linear layers are StackedLinear over the stacked parameters."""
        folded = copy.deepcopy(models[0])
        index = {n: i for i, n in enumerate(self.names)}
        for name, mod in list(folded.named_modules()):
            if isinstance(mod, nn.Linear):
                parent, _, leaf = name.rpartition(".")
                layer = StackedLinear(self.trained[index[f"model.{name}.weight"]],
                                      self.trained[index[f"model.{name}.bias"]], self.rows)
                setattr(folded.get_submodule(parent) if parent else folded, leaf, layer)
        if isinstance(getattr(folded, "decoder", None), nn.Module):  # the K samples' rows, reordered once
            folded.decoder = _MemberMajor(folded.decoder, len(models), self.rows)
        return folded

    def __call__(self, x, generators, progress):
        """x (M, B, C, H, W) -> losses (M,), batch sums of bound, recon and KL (M, 3)."""
        m, b, device = x.shape[0], x.shape[1], x.device
        shape = noise_shape(self.config, b, self.latent_dim)  # drawn outside the step, as a separate run draws it
        noise = [torch.randn(shape, generator=g, device=device) for g in generators] if shape else None  # M x (K, B, D)
        if self.folded is not None:
            eps = torch.stack(noise, 1).flatten(1, 2) if noise else None  # (K, M x B, D), member-major rows
            self.rows.per_member = b
            terms = self.objective.bound(self.folded, x.flatten(0, 1), self.objective.config,
                                         self.objective.beta_at(progress), eps)
            bound, recon, kl = (t.view(m, b) for t in (terms.bound, terms.recon, terms.kl))
        else:
            eps = torch.stack(noise) if noise else torch.zeros(m, 1, device=device)  # (M, K, B, D)
            params = {n: (p.transpose(1, 2) if f else p) for n, p, f in zip(self.names, self.trained, self.flip)}
            bound, recon, kl = self.batched(params, self.buffers, x, eps, progress)  # each (M, B)
        sums = torch.stack([bound.sum(-1), recon.sum(-1), kl.sum(-1)], 1).detach().double()
        return -bound.mean(-1), sums

    @torch.no_grad()
    def sync(self) -> None:
        for k, params in enumerate(self.member_params):
            for n, p, f in zip(self.names, self.trained, self.flip):
                params[n].copy_(_layout(p[k], f))

    def member_optimizer_state(self, state: dict, k: int) -> dict:
        """Member k's Adam state, in the format a single run's optimizer has (same parameter order and layout)."""
        member = {}
        for p, st in state["state"].items():
            member[p] = {key: (v.clone() if key == "step" else _layout(v[k], self.flip[p]).contiguous().clone())
                         for key, v in st.items()}
        return {"state": member, "param_groups": [dict(g) for g in state["param_groups"]]}

    def stack_optimizer_states(self, states: list[dict]) -> dict:
        """Members' single-run Adam states -> the stacked optimizer's state (their step counts are equal)."""
        stacked = {}
        for p, st in states[0]["state"].items():
            stacked[p] = {key: (v if key == "step" else torch.stack([_layout(s["state"][p][key], self.flip[p])
                                                                     for s in states]).contiguous())
                          for key, v in st.items()}
        return {"state": stacked, "param_groups": states[0]["param_groups"]}


def train_ensemble(configs: list[RunConfig], out: str | Path = "runs", *, dataset: Dataset | None = None,
                   progress: bool | None = None, log: Callable[[str], None] | None = None,
                   precision_probe: dict | None = None) -> list[Run]:
    """Train ``configs`` (equal but for their seeds) together; returns their Runs.

    Raises NotVectorisable when they cannot be (different configs, members at different points of training, or one
    diverged: that one is marked failed); the caller then trains them one by one with :func:`vaelab.trainer.train`,
    which resumes each from its checkpoint. ``precision_probe``: as for :func:`vaelab.trainer.train`."""
    reason = vectorise_reason(configs)
    if reason:
        raise NotVectorisable(reason)
    run_dirs = [Path(out) / c.name for c in configs]
    log = log or log_to_stderr
    with training_session(configs, run_dirs, resume=True, overwrite=False) as stop:
        for run_dir in run_dirs:  # a checkpoint a killed writer finished but did not rename counts in the comparison
            recover_run(run_dir, log)
        try:
            fit(configs, run_dirs, dataset, progress, log, stop, StackedStep, precision_probe,
                at_epoch=common_checkpoint(run_dirs))
        except TrainingDiverged as exc:
            raise NotVectorisable(f"{exc.run_dir.name} diverged ({exc}); train the others one by one") from None
    return [Run(d) for d in run_dirs]


def common_checkpoint(run_dirs: list[Path]) -> int | None:
    """When the members' newest valid checkpoints are of different epochs (the process was killed between the
    members' checkpoint writes; read after :func:`vaelab.trainer.recover_run`, so as they will be loaded), the newest epoch at which every member has a valid whole-epoch checkpoint (the store
    keeps two), so they resume together, vectorised, exactly as an uninterrupted ensemble; 0 when some member has no
    valid checkpoint yet (killed during the first epoch's writes: they all start again, together); else None (they
    agree, or there is no such epoch: then they train one by one)."""
    stores = [CheckpointStore(d / "checkpoints") for d in run_dirs]
    newest = [next((e for e in s.epochs() if s.verify(e) is None), None) for s in stores]
    if len(set(newest)) == 1:
        return None
    if None in newest:
        return 0
    epoch = min(newest)
    for store in stores:
        loaded = store.load(epoch, warn=lambda message: None)  # a member without that epoch: no common one
        if loaded is None or loaded[1].get("partial"):
            return None
    return epoch


def _layout(t: torch.Tensor, flip: bool) -> torch.Tensor:
    """A member's weight (out, in) <-> its slice of the stacked parameter (in, out); other tensors as they are."""
    return t.T if flip else t
