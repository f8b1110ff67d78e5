import torch

from micd.nets import VNet, count_parameters


def test_protocol_vnet_has_about_37_8_million_parameters():
    assert abs(count_parameters(VNet(num_classes=16, n_filters=32)) - 37.8e6) < 0.05e6


def test_stage_shapes_and_decoder_features():
    net = VNet(num_classes=5, n_filters=4).eval()
    logits, features = net(torch.zeros(2, 1, 16, 32, 48), return_features=True)
    assert logits.shape == (2, 5, 16, 32, 48)
    # four decoder stages, from the coarsest (8n channels at 1/8) to full resolution (n)
    assert [tuple(f.shape[1:]) for f in features] == [
        (32, 2, 4, 6),
        (16, 4, 8, 12),
        (8, 8, 16, 24),
        (4, 16, 32, 48),
    ]


def test_dropout_only_in_training():
    net = VNet(num_classes=3, n_filters=2)
    x = torch.randn(2, 1, 32, 32, 32)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(0)
    a = net(x)
    torch.manual_seed(1)
    assert not torch.equal(a, net(x))
