"""The LM head fused with the next-token loss (gpt2core.fused_loss) against the unfused loss and its gradients."""

import pytest
import torch
import torch.nn.functional as F

from gpt2core.fused_loss import fused_linear_cross_entropy


def unfused(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((hidden @ weight.t()).float(), targets, ignore_index=-100)


@pytest.mark.parametrize("chunk_rows", [7, 64, 1000])
def test_loss_and_gradients_equal_the_unfused_loss(chunk_rows):
    torch.manual_seed(0)
    hidden = torch.randn(50, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 300, (50,))
    targets[[3, 17, 40]] = -100  # ignored positions count neither in the loss nor in its mean
    (2.5 * unfused(hidden, weight, targets)).backward()
    ref = (hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None
    loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows)
    (2.5 * loss).backward()  # a scaled loss scales the gradients computed in the forward pass
    assert loss.item() == pytest.approx(unfused(hidden, weight, targets).item(), rel=1e-6)
    torch.testing.assert_close(hidden.grad, ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight.grad, ref[1], rtol=1e-5, atol=1e-6)


def test_no_gradient_is_computed_without_autograd():
    hidden, weight = torch.randn(8, 4), torch.randn(10, 4)
    targets = torch.randint(0, 10, (8,))
    with torch.no_grad():
        loss = fused_linear_cross_entropy(hidden, weight, targets)
    assert loss.item() == pytest.approx(unfused(hidden, weight, targets).item(), rel=1e-6)
    assert loss.grad_fn is None


def test_under_bf16_autocast_it_follows_the_unfused_head():
    torch.manual_seed(1)
    hidden = torch.randn(32, 16, requires_grad=True)
    weight = torch.randn(64, 16, requires_grad=True)
    targets = torch.randint(0, 64, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = unfused(hidden, weight, targets)
        ours = fused_linear_cross_entropy(hidden, weight, targets)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-3)
    ours.backward()
    assert weight.grad.dtype == torch.float32 and hidden.grad.dtype == torch.float32
