"""Vectorised multi-model training against separate runs fed the same batches and noise."""
import pytest
import torch

from conftest import tiny_config
from vaelab.ensemble import NotVectorisable, train_ensemble, vectorise_reason
from vaelab.runs import Run
from vaelab.trainer import train


def seeds(n=3, **sections):
    return [tiny_config(**{**sections, "train": {**sections.get("train", {}), "seed": s}}).model_copy(update={"name": f"m{s}"})
            for s in range(n)]


def quiet(m):
    pass


def assert_same(a: Run, b: Run, rtol=1e-5, atol=1e-6):
    strip = ("seconds", "train_examples_per_s", "vectorised")
    for ra, rb in zip(a.metrics, b.metrics, strict=True):
        for k, v in ra.items():
            if k in strip or k == "kl_per_dim":
                continue
            assert (rb[k] == v) if v is None else (rb[k] == pytest.approx(v, rel=rtol, abs=atol)), k
    wa, wb = a.load_model().state_dict(), b.load_model().state_dict()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=rtol, atol=atol), k


@pytest.mark.parametrize("sections", [
    {"model": {"arch": "64-64-8"}, "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3}},
    {"model": {"arch": "64-32-32-4", "posterior": "isotropic"}, "objective": {"name": "iwae", "samples": 3},
     "train": {"epochs": 2, "batch_size": 100, "lr": 3e-3}},
    {"model": {"arch": "64-32-2", "posterior": "deterministic"}, "objective": {"name": "deterministic"},
     "train": {"epochs": 2, "batch_size": 128, "lr": 3e-3}},
    {"data": {"pixels": "continuous"}, "model": {"arch": "64-32-4", "likelihood": "gaussian"},
     "train": {"epochs": 2, "batch_size": 128, "lr": 3e-3}},
])
def test_vectorised_members_equal_separate_runs(tmp_path, sections):
    cfgs = seeds(3, **sections)
    together = train_ensemble(cfgs, tmp_path / "v", progress=False, log=quiet)
    for c, member in zip(cfgs, together):
        alone = train(c, tmp_path / "s", progress=False, log=quiet)
        assert_same(member, alone)
        assert member.status["state"] == "finished" and member.metrics[-1]["vectorised"] == 3


def test_vectorised_resume_and_handover_to_the_ordinary_trainer(tmp_path):
    cfgs = seeds(2, model={"arch": "64-64-8"}, train={"epochs": 4, "batch_size": 64, "lr": 3e-3})
    whole = train_ensemble(cfgs, tmp_path / "a", progress=False, log=quiet)
    half = [c.model_copy(update={"train": c.train.model_copy(update={"epochs": 2})}) for c in cfgs]
    train_ensemble(half, tmp_path / "b", progress=False, log=quiet)
    resumed = train_ensemble(cfgs, tmp_path / "b", progress=False, log=quiet)  # continues both from epoch 2
    for a, b in zip(whole, resumed):
        assert_same(a, b, rtol=0, atol=0)
    # a member's checkpoint is an ordinary one: the single-run trainer continues it (Adam state, RNG and all)
    more = cfgs[0].model_copy(update={"train": cfgs[0].train.model_copy(update={"epochs": 5})})
    alone = train(more, tmp_path / "b", resume=True, progress=False, log=quiet)
    reference = train(more, tmp_path / "c", progress=False, log=quiet)
    assert_same(alone, reference)


def test_what_cannot_be_vectorised_is_refused(tmp_path, monkeypatch):
    a, b = seeds(2, model={"arch": "64-32-4"})
    assert vectorise_reason([a]) == "fewer than two runs"
    other = b.model_copy(update={"train": b.train.model_copy(update={"lr": 0.5})})
    assert vectorise_reason([a, other]) == "the runs differ in more than their seed"
    conv = seeds(2, model={"network": "conv", "latent_dim": 4})
    assert vectorise_reason(conv) == "only MLP networks are vectorised"
    bf16 = seeds(2, model={"arch": "64-32-4"}, train={"precision": "bf16"})
    assert vectorise_reason(bf16).startswith("bf16 runs are trained one by one")  # never silently in fp32
    with pytest.raises(NotVectorisable):
        train_ensemble([a, other], tmp_path, progress=False, log=quiet)
    monkeypatch.setenv("VAELAB_FAULT_NAN_STEP", "3")
    cfgs = seeds(2, model={"arch": "64-32-4"}, train={"epochs": 2})
    with pytest.raises(NotVectorisable, match="m0 diverged"):
        train_ensemble(cfgs, tmp_path / "nan", progress=False, log=quiet)
    assert Run(tmp_path / "nan" / "m0").status["state"] == "failed"
