"""The in-memory fast path against the torchvision path: augmentation statistics, exactness, seeding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from harness.data import build_dataset, tensor_transform
from harness.data.fast import TensorLoader

H = W = 8
PAD = 2
N_DRAWS = 3000


def position_image() -> torch.Tensor:
    """(1, 8, 8) uint8 whose pixel (i, j) holds 1 + 8i + j: any crop/flip can be read back from it."""
    return (1 + torch.arange(H * W, dtype=torch.int64)).view(1, H, W).to(torch.uint8)


def decode(out_u8: np.ndarray) -> tuple[int, int, bool]:
    """(row offset, column offset, flipped) of a crop of the zero-padded position image.

    The centre pixels always come from the image (offsets are at most 2*PAD < H/2), so they decode.
    """
    r, c = H // 2, W // 2 - 1
    a, b = int(out_u8[r, c]), int(out_u8[r, c + 1])
    assert a > 0 and b > 0
    flipped = b < a
    i, j = divmod(a - 1, W)          # source pixel of output (r, c), unpadded coordinates
    oy = i + PAD - r
    ox = j + PAD - c if not flipped else j + PAD - (W - 1 - c)
    return oy, ox, flipped


def expected_view(oy: int, ox: int, flipped: bool) -> np.ndarray:
    """The crop/flip computed independently with numpy from the decoded parameters."""
    padded = np.pad(position_image()[0].numpy(), PAD)
    crop = padded[oy:oy + H, ox:ox + W]
    return crop[:, ::-1] if flipped else crop


def fast_draws(seed: int) -> list[np.ndarray]:
    x = position_image().unsqueeze(0).repeat(N_DRAWS, 1, 1, 1)  # (N, 1, 8, 8)
    loader = TensorLoader(x, torch.zeros(N_DRAWS, dtype=torch.int64), batch_size=500, shuffle=False,
                          drop_last=False, generator=torch.Generator().manual_seed(seed), device="cpu",
                          mean=(0.0,), std=(1.0,), crop_padding=PAD, flip=True)
    outs = torch.cat([xb for xb, _, _ in loader])  # (N, 1, 8, 8) = pixels / 255
    return list(torch.round(outs * 255).to(torch.int64)[:, 0].numpy())


def torchvision_draws(seed: int) -> list[np.ndarray]:
    tf = tensor_transform(size=H, crop_padding=PAD, flip=True, mean=(0.0,), std=(1.0,))
    torch.manual_seed(seed)
    img = position_image()
    return [torch.round(tf(img) * 255).to(torch.int64)[0].numpy() for _ in range(N_DRAWS)]


@pytest.fixture(scope="module")
def draws() -> dict[str, list[tuple[int, int, bool]]]:
    out = {}
    for name, fn in (("fast", fast_draws), ("torchvision", torchvision_draws)):
        decoded = []
        for view in fn(0):
            oy, ox, fl = decode(view)
            # every output is exactly the crop (and flip) of the zero-padded image, nothing else
            np.testing.assert_array_equal(view, expected_view(oy, ox, fl))
            decoded.append((oy, ox, fl))
        out[name] = decoded
    return out


@pytest.mark.parametrize("path", ["fast", "torchvision"])
def test_offsets_uniform_and_flip_fair(draws, path):
    d = np.array(draws[path])  # (N, 3): oy, ox, flipped
    k = 2 * PAD + 1
    for col in (0, 1):
        counts = np.bincount(d[:, col], minlength=k)
        assert len(counts) == k and d[:, col].min() >= 0  # offsets live in 0..2*pad
        assert stats.chisquare(counts).pvalue > 1e-3
        # discrete uniform on 0..2p: mean p, variance ((2p+1)^2 - 1) / 12
        assert abs(d[:, col].mean() - PAD) < 4 * np.sqrt(((k * k - 1) / 12) / N_DRAWS)
        assert abs(d[:, col].var() - (k * k - 1) / 12) < 0.15
    rate = d[:, 2].mean()
    assert abs(rate - 0.5) < 4 * np.sqrt(0.25 / N_DRAWS)


def test_fast_and_torchvision_agree_in_distribution(draws):
    f, t = np.array(draws["fast"]), np.array(draws["torchvision"])
    for col in (0, 1):
        table = np.stack([np.bincount(f[:, col], minlength=2 * PAD + 1),
                          np.bincount(t[:, col], minlength=2 * PAD + 1)])
        assert stats.chi2_contingency(table).pvalue > 1e-3
    table = np.array([[f[:, 2].sum(), (1 - f[:, 2]).sum()], [t[:, 2].sum(), (1 - t[:, 2]).sum()]])
    assert stats.chi2_contingency(table).pvalue > 1e-3
    # the row and column offsets are drawn independently of each other and of the flip
    ct = np.zeros((2 * PAD + 1, 2 * PAD + 1))
    np.add.at(ct, (f[:, 0], f[:, 1]), 1)
    assert stats.chi2_contingency(ct).pvalue > 1e-3


def test_identical_to_torchvision_path_with_augmentation_off():
    b = build_dataset("synthetic", {"train_per_class": 6, "val_per_class": 2})
    m = b.memory
    loader = TensorLoader(m.train_x, m.train_y, batch_size=16, shuffle=False, drop_last=False,
                          generator=torch.Generator().manual_seed(0), device="cpu", mean=b.mean, std=b.std)
    xs, ys, ids = zip(*loader, strict=True)
    fast_x, fast_y, fast_i = torch.cat(xs), torch.cat(ys), torch.cat(ids)
    items = [b.train_eval[i] for i in range(len(b.train_eval))]
    ref_x = torch.stack([x for x, _, _ in items])
    assert torch.equal(fast_x, ref_x)  # bit for bit
    assert fast_y.tolist() == [y for _, y, _ in items]
    assert fast_i.tolist() == list(range(len(items)))
    # the normalisation itself, computed independently: (u8 / 255 - mean) / std
    want = (m.train_x[3].double() / 255 - torch.tensor(b.mean, dtype=torch.float64)[:, None, None]) \
        / torch.tensor(b.std, dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(fast_x[3].double(), want, rtol=0, atol=1e-5)

    # the first epoch's loss of a fixed model is the same on both paths
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(ref_x[0].numel(), b.num_classes))
    dl = torch.utils.data.DataLoader(b.train_eval, batch_size=16, shuffle=False)
    with torch.no_grad():
        fast_loss = [torch.nn.functional.cross_entropy(model(x), y).item() for x, y, _ in loader]
        ref_loss = [torch.nn.functional.cross_entropy(model(x), y).item() for x, y, _ in dl]
    assert fast_loss == pytest.approx(ref_loss, rel=1e-6)


def make_loader(seed: int, **kw) -> TensorLoader:
    n = kw.pop("n", 50)
    x = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 3, 4, 4)
    y = torch.arange(n) % 5
    args = dict(batch_size=8, shuffle=True, drop_last=False, generator=torch.Generator().manual_seed(seed),
                device="cpu", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_padding=1, flip=True)
    args.update(kw)
    return TensorLoader(x, y, **args)


def epoch(loader: TensorLoader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, ys, ids = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys), torch.cat(ids)


def test_same_seed_same_batches_different_seed_different():
    a, b, c = make_loader(0), make_loader(0), make_loader(1)
    ea, eb, ec = epoch(a), epoch(b), epoch(c)
    assert all(torch.equal(u, v) for u, v in zip(ea, eb, strict=True))
    assert not torch.equal(ea[2], ec[2])          # another order
    assert not torch.equal(ea[0], ec[0])
    ea2 = epoch(a)                                # the next epoch is a fresh permutation
    assert not torch.equal(ea[2], ea2[2])
    assert sorted(ea2[2].tolist()) == list(range(50))


def test_len_permutation_and_labels():
    for n, bs, drop, want in ((50, 8, False, 7), (50, 8, True, 6), (48, 8, True, 6), (1, 8, False, 1)):
        loader = make_loader(0, n=n, batch_size=bs, drop_last=drop)
        assert len(loader) == want
        batches = list(loader)
        assert len(batches) == want
        idx = torch.cat([i for _, _, i in batches])
        assert len(set(idx.tolist())) == len(idx)  # each sample at most once per epoch
        assert len(idx) == (n // bs * bs if drop else n)
        for _, y, i in batches:
            assert torch.equal(y, i % 5)           # labels travel with their samples


def test_indices_subset_and_batch():
    sub = torch.tensor([3, 7, 11, 19, 23])
    loader = make_loader(0, indices=sub, batch_size=2)
    assert len(loader) == 3
    _, _, idx = epoch(loader)
    assert sorted(idx.tolist()) == sub.tolist()

    plain = make_loader(0, crop_padding=0, flip=False)
    aug = make_loader(0, crop_padding=1, flip=True)
    want = torch.tensor([4, 4, 9, 0])
    x0, y0, i0 = plain.batch(want)
    x1, y1, i1 = aug.batch(want)
    assert torch.equal(i0, want) and torch.equal(y0, want % 5) and torch.equal(y1, y0)
    assert x0.shape == x1.shape == (4, 3, 4, 4)
    assert torch.equal(x0[0], x0[1])              # no augmentation: the same sample gives the same image
    assert not torch.equal(x1, x0)                # augmentation moved or flipped something
    # each augmented image is one of the 9 crops (x2 flips) of its zero-padded raw image, normalised
    raw = plain.x[want].float()
    for k in range(4):
        padded = torch.nn.functional.pad(raw[k], (1, 1, 1, 1))  # (3, 6, 6)
        views = [padded[:, i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
        views = [(v / 255 - 0.5) / 0.25 for v in views + [v.flip(2) for v in views]]
        assert any(torch.allclose(x1[k], v, atol=1e-6) for v in views)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        TensorLoader(torch.zeros(2, 1, 4, 4), torch.zeros(2), batch_size=1, shuffle=False, drop_last=False,
                     generator=None, device="cpu", mean=(0.0,), std=(1.0,))
    with pytest.raises(ValueError, match="channels"):
        TensorLoader(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2), batch_size=1, shuffle=False,
                     drop_last=False, generator=None, device="cpu", mean=(0.0, 0.0), std=(1.0, 1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_no_host_sync():
    dev = torch.device("cuda")
    x = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8)
    loader = TensorLoader(x, torch.arange(1000) % 10, batch_size=128, shuffle=True, drop_last=False,
                          generator=torch.Generator(device=dev).manual_seed(0), device=dev,
                          mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2), crop_padding=4, flip=True)
    list(loader)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = list(loader)
        xb, _, ib = batches[-1]
        xb2, _, _ = loader.batch(ib)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(batches) == len(loader) and xb.device.type == "cuda" and xb2.shape == (len(ib), 3, 32, 32)
