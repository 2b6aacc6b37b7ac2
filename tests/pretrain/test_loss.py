import math

import torch
import torch.nn.functional as F

from pretrain.moco.loss import info_nce
from pretrain.simclr.loss import nt_xent


def naive_nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """The formula written as loops: -log(exp(s_ip) / sum_{j != i} exp(s_ij)), averaged over 2N anchors."""
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        p = (i + n2 // 2) % n2
        sims = [F.cosine_similarity(z[i], z[j], dim=0) / temperature for j in range(n2)]
        denominator = sum(math.exp(float(sims[j])) for j in range(n2) if j != i)
        total += -math.log(math.exp(float(sims[p])) / denominator)
    return torch.tensor(total / n2)


def test_matches_naive_loop():
    torch.manual_seed(0)
    z = torch.randn(10, 6)
    for temperature in (0.07, 0.5, 1.0):
        loss, _ = nt_xent(z, temperature)
        assert torch.allclose(loss, naive_nt_xent(z, temperature), rtol=1e-4)


def test_uniform_embeddings_give_log_2n_minus_1():
    for n in (2, 4, 16):
        loss, rank = nt_xent(torch.ones(2 * n, 8), temperature=0.07)
        assert math.isclose(float(loss), math.log(2 * n - 1), rel_tol=1e-6)
        assert rank.tolist() == [0] * (2 * n)


def test_exact_value_for_orthogonal_pairs():
    # views of each image identical, images mutually orthogonal: s_ip = 1/t, other candidates 0
    t = 0.5
    z = torch.cat([torch.eye(3), torch.eye(3)])
    loss, _ = nt_xent(z, t)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 4))
    assert math.isclose(float(loss), expected, rel_tol=1e-6)


def test_rank_of_positive():
    # anchor 0's positive (row 2) is less similar than row 1 -> rank 1; others rank 0
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])
    _, rank = nt_xent(z, 1.0)
    assert rank[0] == 1
    assert rank[3] == 1  # positive of row 3 is row 1; row 2 is more similar
    loss, _ = nt_xent(z.requires_grad_(), 1.0)
    loss.backward()  # differentiable
    assert z.grad is not None and torch.isfinite(z.grad).all()


def naive_dcl(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """DCL written as loops: -s_ip + log sum_{j not in {i, p}} exp(s_ij), averaged over 2N anchors."""
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        p = (i + n2 // 2) % n2
        sims = [float(F.cosine_similarity(z[i], z[j], dim=0)) / temperature for j in range(n2)]
        total += -sims[p] + math.log(sum(math.exp(sims[j]) for j in range(n2) if j not in (i, p)))
    return torch.tensor(total / n2)


def test_decoupled_loss_matches_naive_loop_and_drops_the_positive():
    torch.manual_seed(1)
    z = torch.randn(10, 6)
    for temperature in (0.1, 0.5):
        loss, rank = nt_xent(z, temperature, decoupled=True)
        assert torch.allclose(loss, naive_dcl(z, temperature), rtol=1e-4)
        assert torch.equal(rank, nt_xent(z, temperature)[1])  # the same ranks
    for n in (2, 8):
        uniform, _ = nt_xent(torch.ones(2 * n, 4), 0.07, decoupled=True)
        assert math.isclose(float(uniform), math.log(2 * n - 2), rel_tol=1e-5)


def naive_info_nce(q, k, queue, temperature):
    total = 0.0
    for i in range(len(q)):
        positive = float(F.cosine_similarity(q[i], k[i], dim=0)) / temperature
        negatives = [float(F.cosine_similarity(q[i], key, dim=0)) / temperature for key in queue]
        total += -positive + math.log(math.exp(positive) + sum(math.exp(s) for s in negatives))
    return total / len(q)


def test_info_nce_matches_naive_loop_and_exact_values():
    torch.manual_seed(2)
    q, k, queue = torch.randn(5, 8), torch.randn(5, 8), torch.randn(12, 8)
    for temperature in (0.2, 1.0):
        loss, rank = info_nce(q, k, queue, temperature)
        assert math.isclose(float(loss), naive_info_nce(q, k, queue, temperature), rel_tol=1e-4)
        sims = F.normalize(q, dim=1) @ F.normalize(queue, dim=1).T
        assert rank.tolist() == (sims > F.cosine_similarity(q, k)[:, None]).sum(1).tolist()
    loss, rank = info_nce(torch.ones(4, 3), torch.ones(4, 3), torch.ones(7, 3), 0.2)
    assert math.isclose(float(loss), math.log(7 + 1), rel_tol=1e-6) and rank.tolist() == [0] * 4
    q.requires_grad_()
    info_nce(q, k, queue, 0.2)[0].backward()
    assert torch.isfinite(q.grad).all()
