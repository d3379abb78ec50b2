"""The reference recipe against a plain re-statement of the authors' training step (nengdong96/CSDN
at commit 2224959: core/train.py, core/base.py, tools/loss.py, tools/MSEL.py), and what the clean
recipe corrects.

The re-statement below uses the model's modules for the network itself and torch's own
functions for everything else; it calls nothing from csdn.train.losses or csdn.train.
"""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from csdn import CSDN, CSDNConfig
from csdn.train import TrainConfig
from csdn.train.schedule import apply_learning_rate
from csdn.train.stages import autocast_factory, image_step, make_optimizer, prompt_step

CLASSES, IDS, PER_ID = 6, 3, 4  # 4 images per identity: the authors' MSEL(4) and their sampler's K
N = IDS * PER_ID


pytestmark = pytest.mark.usefixtures("single_thread")


def _model() -> CSDN:
    torch.manual_seed(0)
    model = CSDN(CSDNConfig.tiny(num_classes=CLASSES))
    with torch.no_grad():  # non-trivial heads, so that every gradient path is exercised
        for head in (model.gem_head, model.proj_head):
            head.bn.bias.normal_(0, 0.1)
            head.classifier.weight.normal_(0, 0.1)
    return model


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    batch = {key: torch.randn(N, 3, 64, 32, generator=generator) for key in ("visible", "exchange", "infrared")}
    batch["labels"] = torch.tensor([4, 1, 2]).repeat_interleave(PER_ID)
    return batch


# ---------------------------------------------------------------------------- the authors' formulas
def _authors_pdist(x: torch.Tensor) -> torch.Tensor:
    squares = x.pow(2).sum(dim=1, keepdim=True).expand(len(x), len(x))
    return (squares + squares.t()).addmm(x, x.t(), beta=1, alpha=-2).clamp(min=1e-12).sqrt()


def _authors_weights(dist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    top = torch.max(dist * mask, dim=1, keepdim=True)[0]
    exps = torch.exp(dist - top)
    return exps * mask / (torch.sum(exps * mask, dim=1, keepdim=True) + 1e-6)


def _authors_triplet(x: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    dist = _authors_pdist(x)
    pos = pids.expand(len(x), len(x)).eq(pids.expand(len(x), len(x)).t()).float()
    neg = 1.0 - pos
    d_ap, d_an = dist * pos, dist * neg
    furthest = torch.sum(d_ap * _authors_weights(d_ap, pos), dim=1)
    closest = torch.sum(d_an * _authors_weights(-d_an, neg), dim=1)
    return torch.nn.SoftMarginLoss()(closest - furthest, torch.ones_like(closest))


def _authors_supcon(a: torch.Tensor, b: torch.Tensor, la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    mask = la[:, None].eq(lb[None, :]).float()
    logits = a @ b.t()
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    log_prob = logits - torch.log(torch.exp(logits).sum(1, keepdim=True))
    return -((mask * log_prob).sum(1) / mask.sum(1)).mean()


def _authors_msel(x: torch.Tensor, pids: torch.Tensor, num_pos: int = 4) -> torch.Tensor:
    """tools/MSEL.py: rows are [visible; infrared] with one identity sequence; per modality, the
    mean of the num_pos - 1 largest same-identity distances (zeros elsewhere) against the mean
    cross-modality same-identity distance, squared."""
    n = len(x) // 2
    dist = _authors_pdist(x)
    same = pids[:n].expand(n, n).eq(pids[:n].expand(n, n).t())
    halves = []
    for own, other in ((slice(0, n), slice(n, 2 * n)), (slice(n, 2 * n), slice(0, n))):
        intra = (same * dist[own, own]).topk(num_pos - 1, dim=1, largest=True, sorted=False)[0].mean(dim=1)
        cross = dist[own, other][same].view(n, -1).mean(dim=1)
        halves.append((cross - intra).pow(2).mean())
    return (halves[0] + halves[1]) / 2


def _authors_stage3_loss(model: CSDN, batch: dict[str, torch.Tensor], text: torch.Tensor) -> dict[str, torch.Tensor]:
    labels = batch["labels"]
    maps = torch.cat(
        [model.stem_visible(torch.cat([batch["visible"], batch["exchange"]])), model.stem_infrared(batch["infrared"])]
    )
    maps = model.trunk(maps)
    gem = model.gem_head.gem(maps)
    projection = model.attnpool(maps)  # CLIP's pool module as the authors call it
    gem_logits = model.gem_head.classifier(model.gem_head.bn(gem))
    proj_logits = model.proj_head.classifier(model.proj_head.bn(projection))
    pids = torch.cat([labels, labels, labels])
    first_view_and_infrared = torch.cat([torch.arange(N), torch.arange(2 * N, 3 * N)])
    parts = {
        "id": F.cross_entropy(gem_logits, pids) + F.cross_entropy(proj_logits, pids),
        "msel": _authors_msel(gem[first_view_and_infrared], torch.cat([labels, labels]))
        + _authors_msel(projection[first_view_and_infrared], torch.cat([labels, labels])),
        "triplet": _authors_triplet(gem, pids) + _authors_triplet(projection, pids),
        "i2t_visible": F.cross_entropy(projection[:N] @ text.t(), labels),
        "i2t_infrared": F.cross_entropy(projection[2 * N :] @ text.t(), labels),
    }
    parts["loss"] = (
        parts["id"]
        + parts["msel"]
        + 0.15 * parts["triplet"]
        + 0.05 * parts["i2t_visible"]
        + 0.1 * parts["i2t_infrared"]
    )
    return parts


def _authors_stage3_optimizer(model: CSDN, lr: float) -> torch.optim.Adam:
    """One group per parameter, as core/base.py builds it: heads ('classifier' in the official name) at 2x."""
    heads = {id(p) for p in [*model.gem_head.parameters(), *model.proj_head.parameters()]}
    image = [
        *model.stem_visible.parameters(),
        *model.stem_infrared.parameters(),
        *model.trunk.parameters(),
        *model.attnpool.parameters(),
        *model.gem_head.parameters(),
        *model.proj_head.parameters(),
    ]
    groups = [{"params": [p], "lr": lr * (2 if id(p) in heads else 1), "weight_decay": 5e-4} for p in image]
    return torch.optim.Adam(groups)


# ---------------------------------------------------------------------------- stage 3
def test_reference_stage3_step_equals_the_authors_losses_gradients_and_update():
    ours, theirs = _model().train(), None
    theirs = copy.deepcopy(ours)
    batch, text = _batch(), torch.randn(CLASSES, ours.config.embed_dim, generator=torch.Generator().manual_seed(2))
    config = TrainConfig()  # the defaults are the authors' recipe (the sampler's P does not enter a step)
    epoch = 3  # inside the warm-up: 3e-4 * (0.01 * 0.7 + 0.3)
    lr = 3e-4 * (0.01 * (1 - epoch / 10) + epoch / 10)

    optimizer = make_optimizer(ours, 3, config, set())
    assert apply_learning_rate(optimizer, 3, epoch, config) == pytest.approx(lr)
    losses = image_step(ours, batch, text, config, contextlib.nullcontext)
    optimizer.zero_grad()
    losses["loss"].backward()

    reference = _authors_stage3_loss(theirs, batch, text)
    reference["loss"].backward()
    assert set(losses) == set(reference)  # no term more or less than the authors' stage 3 (MSEL included)
    for name in reference:
        torch.testing.assert_close(losses[name], reference[name], rtol=1e-5, atol=1e-6, msg=name)
    assert float(reference["msel"].detach()) > 1e-3  # MSEL contributes to this batch

    mine, other = dict(ours.named_parameters()), dict(theirs.named_parameters())
    trained = [name for name, p in other.items() if p.grad is not None]
    assert "gem_head.bn.bias" in trained and "proj_head.bn.bias" in trained
    # to 1e-4 of each tensor's largest gradient (BatchNorm in train mode amplifies rounding); where the
    # true gradient is 0 (attnpool.k_proj.bias: a key bias shifts all of a query's logits alike) both
    # sides must just stay at rounding level
    noise_only = {name for name in trained if other[name].grad.abs().max() < 1e-6}
    assert "attnpool.k_proj.bias" in noise_only  # (with others whose gradient is exactly 0 at the first step)
    for name in trained:
        scale = 1e-2 if name in noise_only else float(other[name].grad.abs().max())
        torch.testing.assert_close(mine[name].grad, other[name].grad, rtol=0, atol=1e-4 * scale, msg=name)
    assert all(other[name].grad is None for name in mine if name.startswith(("prompt_", "text_encoder", "fusion")))

    before = {name: p.detach().clone() for name, p in mine.items()}
    optimizer.step()
    _authors_stage3_optimizer(theirs, lr).step()
    for name in trained:
        # Adam's first step moves each weight by lr * g' / (|g'| + 1e-8), g' = g + 5e-4 w (L2 decay):
        # where |g'| is well above rounding level both sides move by ~lr in the same direction
        # (compare to 1% of lr); where g and the decay cancel, or g is rounding noise, g' is
        # noise and the step only has to stay within lr
        clear = (other[name].grad + 5e-4 * before[name]).abs() > 1e-6
        gap = (mine[name].detach() - other[name].detach()).abs()
        assert float(gap[clear].max()) <= lr * 1e-2 if clear.any() else True, name
        assert float(gap.max()) <= lr * 2.01, name
    for head in ("gem_head", "proj_head"):  # the BNNeck bias trains, at twice the base rate
        moved = (mine[f"{head}.bn.bias"].detach() - before[f"{head}.bn.bias"]).abs()
        assert moved.max().item() == pytest.approx(2 * lr, rel=0.05)


def test_clean_recipe_keeps_the_bnneck_biases_and_uses_the_stable_triplet():
    model = _model().train()
    batch, text = _batch(), torch.randn(CLASSES, model.config.embed_dim)
    config = TrainConfig(recipe="clean")
    optimizer = make_optimizer(model, 3, config, set())
    apply_learning_rate(optimizer, 3, 20, config)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model.gem_head.bn.bias) not in trained and id(model.proj_head.bn.bias) not in trained
    assert not model.gem_head.bn.bias.requires_grad
    biases = [model.gem_head.bn.bias.detach().clone(), model.proj_head.bn.bias.detach().clone()]
    losses = image_step(model, batch, text, config, contextlib.nullcontext)
    reference_triplet = _authors_triplet(
        model.gem_head.gem(
            model.trunk(
                torch.cat(
                    [
                        model.stem_visible(torch.cat([batch["visible"], batch["exchange"]])),
                        model.stem_infrared(batch["infrared"]),
                    ]
                )
            )
        ),
        batch["labels"].repeat(3),
    )
    assert not math.isclose(losses["triplet"].item(), 2 * reference_triplet.item(), rel_tol=1e-6)
    optimizer.zero_grad()
    losses["loss"].backward()
    optimizer.step()
    assert torch.equal(model.gem_head.bn.bias, biases[0]) and torch.equal(model.proj_head.bn.bias, biases[1])


# ---------------------------------------------------------------------------- stage 1
def test_reference_stage1_step_equals_the_authors_losses_gradients_and_update():
    ours = _model()
    theirs = copy.deepcopy(ours)
    generator = torch.Generator().manual_seed(3)
    visible = torch.randn(N, ours.config.embed_dim, generator=generator)
    infrared = torch.randn(N, ours.config.embed_dim, generator=generator)
    labels = torch.tensor([0, 5, 3]).repeat_interleave(PER_ID)
    config = TrainConfig()
    epoch = 30  # cosine phase: 1e-6 + 0.5 (3e-4 - 1e-6)(1 + cos(pi 30 / 60))
    lr = 1e-6 + 0.5 * (3e-4 - 1e-6) * (1 + math.cos(math.pi * epoch / 60))

    optimizer = make_optimizer(ours, 1, config, set())
    assert apply_learning_rate(optimizer, 1, epoch, config) == pytest.approx(lr)
    losses = prompt_step(ours, visible, labels, infrared, labels)
    optimizer.zero_grad()
    losses["loss"].backward()

    text = torch.cat(
        [theirs.text_encoder(theirs.prompt_visible(labels)), theirs.text_encoder(theirs.prompt_infrared(labels))]
    )
    image, targets = torch.cat([visible, infrared]), torch.cat([labels, labels])
    i2t, t2i = _authors_supcon(image, text, targets, targets), _authors_supcon(text, image, targets, targets)
    (i2t + t2i).backward()
    torch.testing.assert_close(losses["i2t"], i2t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["t2i"], t2i, rtol=1e-5, atol=1e-6)
    for learner in ("prompt_visible", "prompt_infrared"):  # to 1e-4 of the largest gradient entry
        expected = getattr(theirs, learner).cls_ctx.grad
        scale = float(expected.abs().max())
        torch.testing.assert_close(getattr(ours, learner).cls_ctx.grad, expected, rtol=0, atol=1e-4 * scale)
    optimizer.step()
    params = [theirs.prompt_visible.cls_ctx, theirs.prompt_infrared.cls_ctx]
    torch.optim.Adam([{"params": [p], "lr": lr, "weight_decay": 1e-4} for p in params]).step()
    for mine, other in zip((ours.prompt_visible.cls_ctx, ours.prompt_infrared.cls_ctx), params):
        torch.testing.assert_close(mine, other, rtol=0, atol=lr * 1e-2)


# ---------------------------------------------------------------------------- precision
def test_bf16_autocast_runs_a_stage3_step_on_cpu_close_to_fp32():
    model = _model().train()
    batch, text = _batch(), torch.randn(CLASSES, model.config.embed_dim, generator=torch.Generator().manual_seed(2))
    config = TrainConfig(precision="bf16")
    state = copy.deepcopy(model.state_dict())
    exact = image_step(model, batch, text, config, contextlib.nullcontext)
    model.load_state_dict(state)  # the same BatchNorm statistics for the second pass
    mixed = image_step(model, batch, text, config, autocast_factory("bf16", torch.device("cpu")))
    for name in ("loss", "id", "msel", "triplet", "i2t_visible", "i2t_infrared"):
        assert mixed[name].dtype == torch.float32
        torch.testing.assert_close(mixed[name], exact[name], rtol=5e-2, atol=1e-2, msg=name)
    mixed["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device"):
        autocast_factory("fp16", torch.device("cpu"))
