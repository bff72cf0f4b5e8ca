"""Vectorised multi-model training against separate runs fed the same batches and noise."""
import itertools

import pytest
import torch

from conftest import tiny_config
from vaelab import ensemble
from vaelab.ensemble import NotVectorisable, train_ensemble, vectorise_reason
from vaelab.runs import CheckpointStore, Run
from vaelab.session import prepare_run_dir as _prepare_run_dir
from vaelab.trainer import fit, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def seeds(n=3, **sections):
    return [tiny_config(**{**sections, "train": {**sections.get("train", {}), "seed": s}}).model_copy(update={"name": f"m{s}"})
            for s in range(n)]


def quiet(m):
    pass


def assert_same(a: Run, b: Run, rtol=1e-5, atol=1e-6, weights_norm_rtol=None):
    """Equal metrics (to rtol, atol) and weights (element-wise to rtol, atol; or, with ``weights_norm_rtol``, the
    difference's norm within that share of the weights' norm)."""
    strip = ("seconds", "train_examples_per_s", "vectorised", "precision_probe")
    for ra, rb in zip(a.metrics, b.metrics, strict=True):
        for k, v in ra.items():
            if k in strip or k == "kl_per_dim":
                continue
            assert (rb[k] == v) if v is None or isinstance(v, str) else (rb[k] == pytest.approx(v, rel=rtol, abs=atol)), k
    wa, wb = a.load_model().state_dict(), b.load_model().state_dict()
    for k in wa:
        if weights_norm_rtol is None:
            assert torch.allclose(wa[k], wb[k], rtol=rtol, atol=atol), k
        else:
            assert float((wa[k] - wb[k]).norm()) <= weights_norm_rtol * float(wb[k].norm()), k


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
    """Each member follows its separate run to float32 rounding of batched against single products, which Adam
    amplifies where a gradient is near zero (its first update is lr x sign(g), whatever g's size). Measured: a step's
    gradients differ by 1e-6 to 3e-6 of their size; after two epochs the IWAE config's second member (a nearly
    collapsed posterior, KL 0.34 nats) ends 1.0e-3 of the weights' norm away, its test KL 4e-4 and its test loss
    1.3e-6 away, every other member and metric within 2e-6. Seeds differ by 2-4% in these metrics: a member trained
    on another member's batches, noise or weights fails the 1e-3 tolerance."""
    cfgs = seeds(3, **sections)
    together = train_ensemble(cfgs, tmp_path / "v", progress=False, log=quiet)
    for c, member in zip(cfgs, together):
        alone = train(c, tmp_path / "s", progress=False, log=quiet)
        assert_same(member, alone, rtol=1e-3, weights_norm_rtol=1e-2)
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


def test_members_killed_between_their_checkpoint_writes_resume_together_exactly(tmp_path):
    """A kill between the members' checkpoint writes leaves them at different epochs; they resume from their newest
    common checkpoint, vectorised, and end bit-identical to an uninterrupted ensemble (trained one by one instead,
    they would equal it only to float rounding, and a study's results would drift)."""
    import shutil

    cfgs = seeds(2, model={"arch": "64-64-8"}, train={"epochs": 4, "batch_size": 64, "lr": 3e-3})
    whole = train_ensemble(cfgs, tmp_path / "a", progress=False, log=quiet)
    half = [c.model_copy(update={"train": c.train.model_copy(update={"epochs": 3})}) for c in cfgs]
    train_ensemble(half, tmp_path / "b", progress=False, log=quiet)
    shutil.rmtree(tmp_path / "b" / "m1" / "checkpoints" / "epoch-000003")  # m1's epoch-3 write never happened
    assert ensemble.common_checkpoint([tmp_path / "b" / "m0", tmp_path / "b" / "m1"]) == 2
    lines = []
    resumed = train_ensemble(cfgs, tmp_path / "b", progress=False, log=lines.append)
    assert sum("resuming" in line and "from epoch 2" in line for line in lines) == 2, lines
    for a, b in zip(whole, resumed):
        assert_same(a, b, rtol=0, atol=0)
        assert b.metrics[-1]["vectorised"] == 2 and [r["epoch"] for r in b.metrics] == [1, 2, 3, 4]
    assert ensemble.common_checkpoint([tmp_path / "a" / "m0", tmp_path / "a" / "m1"]) is None  # they agree


def test_a_member_killed_before_its_first_checkpoint_restarts_the_group_together_exactly(tmp_path):
    """Killed during the first epoch's checkpoint writes: one member has epoch 1, the other nothing. The group starts
    again from epoch 0, vectorised, and ends bit-identical to an uninterrupted ensemble (one by one, the member resumed
    alone drifted by 1e-4 in a study's table after four more epochs)."""
    import shutil

    cfgs = seeds(2, model={"arch": "64-64-8"}, train={"epochs": 3, "batch_size": 64, "lr": 3e-3})
    whole = train_ensemble(cfgs, tmp_path / "a", progress=False, log=quiet)
    first = [c.model_copy(update={"train": c.train.model_copy(update={"epochs": 1})}) for c in cfgs]
    train_ensemble(first, tmp_path / "b", progress=False, log=quiet)
    shutil.rmtree(tmp_path / "b" / "m1" / "checkpoints")  # m1's first write never happened
    assert ensemble.common_checkpoint([tmp_path / "b" / "m0", tmp_path / "b" / "m1"]) == 0
    lines = []
    resumed = train_ensemble(cfgs, tmp_path / "b", progress=False, log=lines.append)
    assert sum("starts again from epoch 0" in line for line in lines) == 2, lines
    for a, b in zip(whole, resumed):
        assert_same(a, b, rtol=0, atol=0)
        assert b.metrics[-1]["vectorised"] == 2 and [r["epoch"] for r in b.metrics] == [1, 2, 3]


def test_a_member_killed_before_renaming_its_finished_checkpoint_resumes_with_its_group_exactly(tmp_path):
    """Killed after one member wrote its epoch-3 checkpoint into its hidden folder but before the rename (and before
    the other member's write): resuming finishes that checkpoint, so the members stand at epochs 3 and 2 and resume
    together from epoch 2, vectorised, bit-identical to an uninterrupted ensemble. (Compared before the recovery they
    looked alike at epoch 2, then one loaded epoch 3 and the group fell back to one by one: 1e-4 off in a study.)"""
    import shutil

    cfgs = seeds(2, model={"arch": "64-64-8"}, train={"epochs": 4, "batch_size": 64, "lr": 3e-3})
    whole = train_ensemble(cfgs, tmp_path / "a", progress=False, log=quiet)
    half = [c.model_copy(update={"train": c.train.model_copy(update={"epochs": 3})}) for c in cfgs]
    train_ensemble(half, tmp_path / "b", progress=False, log=quiet)
    m0, m1 = (tmp_path / "b" / m / "checkpoints" for m in ("m0", "m1"))
    (m0 / "epoch-000003").rename(m0 / ".tmp-epoch-000003-99999")  # complete, fsynced, not yet renamed
    shutil.rmtree(m1 / "epoch-000003")  # m1's epoch-3 write never happened
    lines = []
    resumed = train_ensemble(cfgs, tmp_path / "b", progress=False, log=lines.append)
    assert any("completed the checkpoint of epoch 3" in line for line in lines), lines
    assert sum("resuming" in line and "from epoch 2" in line for line in lines) == 2, lines
    for a, b in zip(whole, resumed):
        assert_same(a, b, rtol=0, atol=0)
        assert [r["vectorised"] for r in b.metrics] == [2] * 4


def test_what_cannot_be_vectorised_is_refused(tmp_path, monkeypatch):
    a, b = seeds(2, model={"arch": "64-32-4"})
    assert vectorise_reason([a]) == "fewer than two runs"
    other = b.model_copy(update={"train": b.train.model_copy(update={"lr": 0.5})})
    assert vectorise_reason([a, other]) == "the runs differ in more than their seed"
    conv = seeds(2, model={"network": "conv", "latent_dim": 4})
    assert vectorise_reason(conv) == "only MLP networks are vectorised"
    assert vectorise_reason(seeds(2, model={"arch": "64-32-4"}, train={"precision": "bf16"})) is None  # under autocast
    with pytest.raises(NotVectorisable):
        train_ensemble([a, other], tmp_path, progress=False, log=quiet)
    monkeypatch.setenv("VAELAB_FAULT_NAN_STEP", "3")
    cfgs = seeds(2, model={"arch": "64-32-4"}, train={"epochs": 2})
    with pytest.raises(NotVectorisable, match="m0 diverged"):
        train_ensemble(cfgs, tmp_path / "nan", progress=False, log=quiet)
    assert Run(tmp_path / "nan" / "m0").status["state"] == "failed"


def test_bf16_members_step_under_autocast_and_match_separate_bf16_runs(tmp_path):
    """bf16 seeds are vectorised under the same autocast as a separate run. A batched bf16 product may round
    differently from a single one, so a bf16 member may be another bf16 rounding of the same run: folded (this
    config), members were bit-identical to their separate bf16 runs on an AMD EPYC with AVX-512 BF16 (a folded layer
    adds its bias in bf16, as a single run's addmm does); under vmap, which adds it in float32, they were within 0.06
    nats (4 configs of the test above, 4 seeds, 2 epochs; this config: 0.006) and their weights within 3-14% of
    their norm, the same spread as a separate bf16 run against fp32. The tolerance, 0.05
    nats, is far inside the 0.5 nats test_train allows bf16 against fp32. Autocast must really be on: the bf16
    members' weights differ from the fp32 members' by 2-5% of their norm (measured), where fp32 rounding alone
    gives 1e-7; without autocast they would be equal."""
    sections = {"model": {"arch": "64-64-8"}, "train": {"epochs": 2, "batch_size": 64, "lr": 3e-3}}
    vectorised = {}
    for precision in ("fp32", "bf16"):
        cfgs = seeds(3, **{**sections, "train": {**sections["train"], "precision": precision}})
        vectorised[precision] = train_ensemble(cfgs, tmp_path / precision, progress=False, log=quiet)
    for c, member, fp32 in zip(cfgs, vectorised["bf16"], vectorised["fp32"]):
        alone = train(c, tmp_path / "separate", progress=False, log=quiet)
        assert member.metrics[-1]["vectorised"] == 3
        for ra, rb in zip(member.metrics, alone.metrics, strict=True):
            for key in ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl"):
                assert ra[key] == pytest.approx(rb[key], abs=0.05), key
        w16, w_alone, w32 = (r.load_model().state_dict() for r in (member, alone, fp32))
        assert max(float((w16[k] - w_alone[k]).norm() / w_alone[k].norm()) for k in w16) < 0.25
        assert max(float((w16[k] - w32[k]).norm() / w32[k].norm()) for k in w16) > 1e-3  # autocast was on


class StopAfter:
    """The SIGINT flag, set after it has been read ``n`` times (the loop reads it once per step and once at each
    epoch end)."""

    def __init__(self, n):
        self.reads = itertools.chain(itertools.repeat(False, n), itertools.repeat(True))

    def __bool__(self):
        return next(self.reads)


def test_vectorised_members_stop_inside_an_epoch_and_resume_together_or_alone(tmp_path):
    cfgs = seeds(2, model={"arch": "64-32-4"}, train={"epochs": 2, "batch_size": 128, "lr": 3e-3})  # 12 steps an epoch
    whole = train_ensemble(cfgs, tmp_path / "a", progress=False, log=quiet)
    for out in ("b", "c"):  # stopped at step 6 of epoch 1 (the flag is read once per step)
        dirs = [tmp_path / out / c.name for c in cfgs]
        for c, d in zip(cfgs, dirs):
            _prepare_run_dir(c, d, resume=False, overwrite=False)
        with pytest.raises(KeyboardInterrupt):
            fit(cfgs, dirs, None, False, quiet, StopAfter(5), ensemble.StackedStep)
        for d in dirs:
            _, state, epoch = CheckpointStore(d / "checkpoints").load()
            assert (epoch, state["partial"]["step_in_epoch"], state["step"]) == (0, 6, 6)
    resumed = train_ensemble(cfgs, tmp_path / "b", progress=False, log=quiet)  # together, from step 6 on
    for a, b in zip(whole, resumed):
        assert_same(a, b, rtol=0, atol=0)
    # a member's mid-epoch checkpoint is an ordinary one: it continues alone like a separate run
    alone = train(cfgs[0], tmp_path / "c", resume=True, progress=False, log=quiet)
    assert_same(alone, train(cfgs[0], tmp_path / "s", progress=False, log=quiet))
    with pytest.raises(NotVectorisable, match="different points of training"):  # m0 finished, m1 at step 6
        train_ensemble(cfgs, tmp_path / "c", progress=False, log=quiet)


@pytest.mark.parametrize("blocks", [1, 3])
def test_a_stacked_linear_layer_is_each_members_own_layer_on_its_rows(blocks):
    """G blocks of M x B rows, member-major in each block: member m's rows go through member m's layer."""
    m, b, n_in, n_out = 4, 5, 7, 3
    layers = [torch.nn.Linear(n_in, n_out) for _ in range(m)]
    rows = ensemble._Rows()
    rows.per_member = b
    stacked = ensemble.StackedLinear(torch.nn.Parameter(torch.stack([lay.weight.detach().T for lay in layers])),
                                     torch.nn.Parameter(torch.stack([lay.bias.detach() for lay in layers])), rows)
    x = torch.randn(blocks, m, b, n_in)
    expected = torch.stack([torch.stack([layers[k](x[g, k]) for k in range(m)]) for g in range(blocks)])
    out = stacked(x.reshape(blocks * m * b, n_in))
    assert torch.allclose(out.view(blocks, m, b, n_out), expected, atol=1e-6)
    with pytest.raises(RuntimeError, match="folded linear layer"):
        stacked(torch.randn(m * b + 1, n_in))


def test_mlp_members_are_folded_and_members_with_other_parameters_vmapped():
    from vaelab.models.build import build_model
    from vaelab.objectives import Objective
    from vaelab.training_step import Member

    def step(**sections):
        cfgs = seeds(2, **sections)
        members = [Member(c, None, None, build_model(c), torch.Generator()) for c in cfgs]
        return ensemble.StackedStep(members, Objective(cfgs[0].objective))

    assert step(model={"arch": "64-32-4"}).folded is not None
    # the learned per-pixel std of a Gaussian likelihood is a parameter outside the linear layers
    learned_std = step(data={"pixels": "continuous"}, model={"arch": "64-32-4", "likelihood": "gaussian"})
    assert learned_std.folded is None
    assert ensemble.fold_reason(learned_std.models) == "a parameter outside the linear layers"


def test_a_member_major_decoder_steps_bit_identically_to_layers_that_reorder_their_own_rows():
    """The folded decoder reorders its K samples' rows member-major once; each stacked layer then multiplies exactly
    the rows (in the same order) it multiplied when it reordered its own input: the same losses and gradients, bit for
    bit. Also for a single sample (K = 1, nothing to reorder)."""
    from vaelab.models.build import build_model
    from vaelab.objectives import Objective
    from vaelab.training_step import Member

    def member(c):
        torch.manual_seed(c.train.seed)
        return Member(c, None, None, build_model(c), torch.Generator().manual_seed(c.train.seed))

    for objective in ({"name": "renyi", "samples": 5, "alpha": 0.5}, {"name": "elbo", "samples": 1}):
        cfgs = seeds(3, model={"arch": "64-32-32-4"}, objective=objective)
        x = (torch.rand(3, 16, *member(cfgs[0]).model.image_shape) > 0.5).float()
        out = []
        for member_major in (True, False):
            members = [member(c) for c in cfgs]
            step = ensemble.StackedStep(members, Objective(cfgs[0].objective))
            assert isinstance(step.folded.decoder, ensemble._MemberMajor)
            if not member_major:  # the decoder's stacked layers each reorder their own rows, as before
                step.folded.decoder = step.folded.decoder.inner
            loss, sums = step(x, [m.generator for m in members], 0.5)
            loss.sum().backward()
            out.append((loss.detach(), sums, [p.grad.clone() for p in step.trained]))
        (loss_a, sums_a, grads_a), (loss_b, sums_b, grads_b) = out
        assert torch.equal(loss_a, loss_b) and torch.equal(sums_a, sums_b)
        assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
