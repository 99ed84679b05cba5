import math

import pytest
import torch
from torch import nn

from gnerf.fields import CentredGaussian, CoordinateMLP, PositionalEncoding, count_parameters, make_activation


def test_activation_formulas():
    x = torch.linspace(-1, 1, 11)
    g = make_activation("gaussian", sigma=0.05)
    torch.testing.assert_close(g(x), torch.exp(-(x**2) / (2 * 0.05**2)))
    assert g(torch.zeros(1)).item() == 1.0
    s = make_activation("sine")  # omega defaults to 30
    torch.testing.assert_close(s(x), torch.sin(30 * x))
    w = make_activation("wavelet")  # omega0 = s0 = 10
    torch.testing.assert_close(w(x), torch.cos(10 * x) * torch.exp(-((10 * x) ** 2)))
    r = make_activation("relu")
    torch.testing.assert_close(r(x), x.clamp_min(0))


def test_centred_gaussian_centres_each_point_over_its_channels():
    x = torch.randn(4, 7) * 0.2 + torch.arange(4.0)[:, None]  # rows with different means
    g = CentredGaussian(sigma=0.1)
    torch.testing.assert_close(g(x), torch.exp(-0.5 * (x - x.mean(-1, keepdim=True)) ** 2 / 0.1**2))
    torch.testing.assert_close(g(x + torch.randn(4, 1)), g(x))  # a shift common to one point's channels cancels
    with pytest.raises(ValueError, match="sigma > 0"):
        CentredGaussian(sigma=0.0)


def test_activation_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*gaussian"):
        make_activation("swish")
    with pytest.raises(ValueError, match="sigma > 0"):
        make_activation("gaussian", sigma=0.0)
    with pytest.raises(ValueError, match="bad hyperparameters"):
        make_activation("sine", sigma=3)


def test_positional_encoding_values():
    pe = PositionalEncoding(2, num_frequencies=8)
    x = torch.tensor([[0.25, -0.5]])
    y = pe(x)
    assert y.shape == (1, 2 * 2 * 8) == (1, pe.out_dim)
    expected = []
    for fn in (torch.cos, torch.sin):
        for k in range(8):
            expected.append(fn(2**k * math.pi * x[0]))
    torch.testing.assert_close(y[0], torch.cat(expected))


def test_mlp_shapes_layers_and_default_init():
    net = CoordinateMLP(2, 3, hidden_dim=256, num_layers=5, activation="gaussian", activation_kwargs={"sigma": 0.05})
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 5  # the paper's "5-layer network"
    assert [l.out_features for l in linears] == [256, 256, 256, 256, 3]
    assert count_parameters(net) == 2 * 256 + 256 + 3 * (256 * 256 + 256) + 256 * 3 + 3
    out = net(torch.rand(7, 2) * 2 - 1)
    assert out.shape == (7, 3)
    # default PyTorch init: Kaiming-uniform with bound 1/sqrt(fan_in)
    assert linears[1].weight.abs().max() <= 1 / math.sqrt(256) + 1e-6
    assert linears[1].weight.abs().max() > 0.5 / math.sqrt(256)


def test_siren_init_bounds():
    torch.manual_seed(0)
    net = CoordinateMLP(2, 1, hidden_dim=64, num_layers=4, activation="sine")
    first, hidden = net.layers[0], net.layers[1]
    assert first.weight.abs().max() <= 1 / 2 + 1e-6
    bound = math.sqrt(6 / 64) / 30
    assert hidden.weight.abs().max() <= bound + 1e-7
    assert hidden.weight.abs().max() > 0.8 * bound


def test_skip_connections_and_positional_encoding():
    net = CoordinateMLP(
        3, 4, hidden_dim=32, num_layers=6, activation="relu", skip_connections=[3], positional_encoding=8
    )
    assert net.layers[0].in_features == 3 * 2 * 8
    assert net.layers[3].in_features == 32 + 3 * 2 * 8
    assert net(torch.rand(5, 3)).shape == (5, 4)
    # the skip path really feeds the input: perturbing layer 3's input block changes the output
    with torch.no_grad():
        x = torch.rand(5, 3)
        before = net(x)
        net.layers[3].weight[:, 32:] += 1.0
        assert not torch.allclose(before, net(x))


def test_per_layer_activations_and_errors():
    net = CoordinateMLP(
        1, 1, hidden_dim=8, num_layers=3, activation=["gaussian", "relu"], activation_kwargs=[{"sigma": 0.5}, {}]
    )
    assert type(net.activations[0]).__name__ == "Gaussian" and isinstance(net.activations[1], nn.ReLU)
    with pytest.raises(ValueError, match="2 hidden layers"):
        CoordinateMLP(1, 1, num_layers=3, activation=["gaussian"])
    with pytest.raises(ValueError, match="skip connection index 5"):
        CoordinateMLP(1, 1, num_layers=3, skip_connections=[5])
    with pytest.raises(ValueError, match="last dimension 2"):
        CoordinateMLP(2, 1, hidden_dim=4, num_layers=2)(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="siren"):
        CoordinateMLP(1, 1, num_layers=3, activation="gaussian", init="siren")


def _plain_gaussian(self, x):
    """The plain autograd expression the fused Gaussian replaces."""
    return torch.exp(x.square() * (-0.5 / self.sigma**2))


@pytest.mark.parametrize("sigma", [0.05, 0.1])
def test_fused_gaussian_matches_the_plain_expression(monkeypatch, sigma):
    """Outputs, gradients, Hessian-vector products (double backward) and forward-mode products of a
    Gaussian network are those of the plain expression, to float32 tolerance."""
    from gnerf.fields.activations import Gaussian
    from gnerf.optim.curvature import hessian_vector_product

    torch.manual_seed(0)
    net = CoordinateMLP(3, 4, hidden_dim=32, num_layers=4, activation_kwargs={"sigma": sigma}, skip_connections=(2,))
    x, y = torch.randn(256, 3) * 0.3, torch.randn(256, 4)
    params = list(net.parameters())
    v = [torch.randn_like(p) for p in params]

    def measure():
        out = net(x)
        loss = (out - y).square().mean()
        first_order = torch.autograd.grad(loss, params, retain_graph=True)  # the in-place backward
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hv = hessian_vector_product(params, grads, v)
        names = [n for n, _ in net.named_parameters()]
        _, jv = torch.func.jvp(
            lambda *ps: torch.func.functional_call(net, dict(zip(names, ps)), (x,)),
            tuple(p.detach() for p in params),
            tuple(v),
        )
        return [out.detach()], list(first_order), [g.detach() for g in grads], hv, [jv]

    fused = measure()
    monkeypatch.setattr(Gaussian, "forward", _plain_gaussian)
    plain = measure()
    names = ("output", "gradient", "gradient with a graph", "Hv (double backward)", "Jv (forward mode)")
    for name, a_list, b_list in zip(names, fused, plain):
        for a, b in zip(a_list, b_list):
            scale = b.abs().max().clamp_min(1e-6)
            assert (a - b).abs().max() <= 2e-5 * scale, name
