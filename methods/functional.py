"""The methods' math as pure functions: tensors in, tensors out, keyword arguments only.

Every function stays on its inputs' device and never synchronises with the host (no `.item()`,
`.cpu()`, numpy, or boolean-mask indexing, whose output size the host must learn). Shapes: B samples,
C classes, V votes per sample, D channels. "Full layout" means a (B, C) tensor whose target column is 0,
used for non-target distributions so that no (B, C-1) copy of the logits is ever gathered.
See docs/METHODS.md for the definitions these functions pin.

Over 400 lines on purpose: it is the one importable catalogue of every method's math (the names a
user imports), and the Zipf part, half of it, shares its helpers with the others.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# --- shared -------------------------------------------------------------------------------------

def soft_cross_entropy(*, logp: Tensor, target: Tensor) -> Tensor:
    """`mean_i sum_k -target_ik * logp_ik`. logp, target (B, C) -> ()."""
    return -(target * logp).sum(1).mean()


def one_hot(*, targets: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B,) -> (B, C)."""
    return F.one_hot(targets, num_classes).to(dtype)


def drop_target(*, x: Tensor, targets: Tensor) -> Tensor:
    """Remove each row's target column, keeping the order of the others. (B, C) -> (B, C-1)."""
    b, c = x.shape
    cols = torch.arange(c - 1, device=x.device).expand(b, c - 1)  # (B, C-1)
    cols = cols + (cols >= targets[:, None])  # skip the target column
    return x.gather(1, cols)


def insert_target_zero(*, x: Tensor, targets: Tensor) -> Tensor:
    """Inverse of `drop_target`, with 0 in the target column. (B, C-1) -> (B, C)."""
    b, c1 = x.shape
    cols = torch.arange(c1, device=x.device).expand(b, c1)
    cols = cols + (cols >= targets[:, None])
    return x.new_zeros(b, c1 + 1).scatter_(1, cols, x)


def masked_mean(*, values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` (B,) over `mask` (B,) bool; 0 when the mask is empty (no host sync)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


# --- label smoothing ----------------------------------------------------------------------------

def ls_target(*, targets: Tensor, num_classes: int, epsilon: float, form: str = "uniform",
              dtype: torch.dtype = torch.float32) -> Tensor:
    """Smoothed targets (B, C).

    uniform: (1 - eps) * onehot + eps / C on every class (torch's `label_smoothing=eps`).
    others:  1 - eps on the target, eps / (C - 1) on each other class.
    """
    c = num_classes
    if form == "uniform":
        off, on = epsilon / c, 1.0 - epsilon + epsilon / c
    elif form == "others":
        off, on = epsilon / (c - 1), 1.0 - epsilon
    else:
        raise ValueError(f"ls_target: form must be 'uniform' or 'others', got {form!r}")
    t = torch.full((targets.shape[0], c), off, dtype=dtype, device=targets.device)
    return t.scatter_(1, targets[:, None], on)


def ls_parts(*, logp: Tensor, targets: Tensor, form: str) -> tuple[Tensor, Tensor]:
    """(ce, smooth) with `soft CE(ls_target) = (1 - eps) * ce + eps * smooth`, without building the target.

    smooth is the soft CE against the smoothing distribution alone: uniform over all C classes
    (`uniform`) or over the C-1 non-target classes (`others`). logp (B, C) -> two ().
    """
    c = logp.shape[1]
    logp_y = logp.gather(1, targets[:, None])[:, 0]  # (B,)
    ce = -logp_y.mean()
    total = logp.sum(1)  # (B,)
    if form == "uniform":
        smooth = -(total / c).mean()
    else:
        smooth = -((total - logp_y) / (c - 1)).mean()
    return ce, smooth


# --- TF-KD (Tf-KD_reg) --------------------------------------------------------------------------

def tfkd_teacher(*, targets: Tensor, num_classes: int, correct_prob: float | Tensor, temperature: float | Tensor,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """The manual teacher q = softmax(u / T), u = a on the target and (1 - a)/(C - 1) elsewhere. (B, C).

    The softmax is applied to a probability vector as if it were logits: the official code's quirk.
    a and T may be 0-dim tensors (a compiled loss's inputs), hence `where` rather than a fill.
    """
    c = num_classes
    u = torch.where(F.one_hot(targets, c).bool(), correct_prob, (1.0 - correct_prob) / (c - 1)).to(dtype)
    return torch.softmax(u / temperature, dim=1)


def tfkd_kd(*, logp: Tensor, teacher: Tensor) -> Tensor:
    """PyTorch's KLDivLoss default 'mean' written out: sum q (log q - logp) / (B * C). (B, C) -> ()."""
    return (torch.xlogy(teacher, teacher) - teacher * logp).sum() / teacher.numel()


# --- PS-KD --------------------------------------------------------------------------------------

def pskd_alpha(*, alpha_T: float, epoch: int, num_epochs: int) -> float:
    """alpha_t = alpha_T * (e + 1) / E for the 0-based epoch e: reaches alpha_T in the last epoch."""
    return alpha_T * (epoch + 1) / num_epochs


def pskd_target(*, targets: Tensor, previous: Tensor, alpha_t: float) -> Tensor:
    """(1 - alpha_t) * onehot + alpha_t * previous. previous (B, C) -> (B, C)."""
    oh = one_hot(targets=targets, num_classes=previous.shape[1], dtype=previous.dtype)
    return (1.0 - alpha_t) * oh + alpha_t * previous


# --- CS-KD --------------------------------------------------------------------------------------

def cskd_kd(*, logits: Tensor, partner_logits: Tensor, temperature: float) -> Tensor:
    """sum_i KL(softmax(z_p/T) || softmax(z_a/T)) * T^2 / B. (B, C) x2 -> (); no gradient into z_p."""
    t = temperature
    logp = F.log_softmax(logits / t, dim=1)
    logq = F.log_softmax(partner_logits.detach() / t, dim=1)
    return (logq.exp() * (logq - logp)).sum() * (t * t) / logits.shape[0]


# --- OLS ----------------------------------------------------------------------------------------

def ols_accumulate_(*, sums: Tensor, counts: Tensor, probs: Tensor, targets: Tensor) -> None:
    """Add the full probability vectors of the correctly classified samples to their label's row, in place.

    sums (C, C) (row = label) and counts (C,) are the epoch's accumulators; probs (B, C). Incorrect
    samples contribute zero (a weight, not boolean indexing, so nothing waits for the host). In
    place because a fresh (C, C) per step would cost C^2 numbers (400 MB at C = 10,000).
    """
    correct = (probs.argmax(1) == targets).to(probs.dtype)  # (B,)
    sums.index_add_(0, targets, probs * correct[:, None])
    counts.index_add_(0, targets, correct)


def ols_matrix(*, sums: Tensor, counts: Tensor) -> Tensor:
    """S[c] = sums[c] / counts[c] where counts[c] > 0, else the uniform row 1/C. (C, C)."""
    c = sums.shape[1]
    mean = sums / counts.clamp_min(1.0)[:, None]
    return torch.where(counts[:, None] > 0, mean, torch.full_like(mean, 1.0 / c))


# --- Zipf's label smoothing ---------------------------------------------------------------------

RANK_DISTRIBUTIONS = ("zipf", "linear_decay", "exponential_decay")  # weight is a function of the rank
RANK_FREE_DISTRIBUTIONS = ("constant", "random_uniform", "random_pareto")
DISTRIBUTIONS = RANK_DISTRIBUTIONS + RANK_FREE_DISTRIBUTIONS

_VOTE_CHUNK = 1 << 22  # dense logits computed at most this many numbers at a time (16 MB in float32)


@torch.no_grad()
def dense_votes(*, final_map: Tensor, weight: Tensor, bias: Tensor | None, upsample: str = "none") -> Tensor:
    """One vote per spatial location: argmax of the classifier applied at that location.

    final_map (B, D, H, W), weight (C, D), bias (C,) -> votes (B, V) long, V = H*W, or 4*H*W with
    `upsample="bilinear"` (x2, align_corners=False like the official `F.upsample`). Ties go to the
    lowest class index (torch.argmax, like numpy). Computed in float32 even under autocast, so that
    bf16 rounding does not change votes, and in chunks so that (B, V, C) never exists at once.
    """
    if upsample not in ("bilinear", "none"):
        raise ValueError(f"dense_votes: upsample must be 'bilinear' or 'none', got {upsample!r}")
    with torch.autocast(device_type=final_map.device.type, enabled=False):
        x = final_map.detach().float()
        wt, bs = weight.detach().float(), None if bias is None else bias.detach().float()
        c, d = wt.shape
        up = upsample == "bilinear"
        # Bilinear weights sum to one, so up(W x + b) = W up(x) + b: with fewer classes than channels it is
        # cheaper to score at the native size and upsample the C score maps than to upsample the D features.
        scores_first = up and c < d
        if up and not scores_first:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        b, _, h, w = x.shape
        rows = max(1, _VOTE_CHUNK // max(1, 4 * h * w * c))
        votes = []
        for i in range(0, b, rows):
            chunk = x[i:i + rows].flatten(2).transpose(1, 2)  # (b', HW, D)
            scores = F.linear(chunk, wt, bs)                   # (b', HW, C)
            if scores_first:
                scores = scores.transpose(1, 2).reshape(-1, c, h, w)
                scores = F.interpolate(scores, scale_factor=2.0, mode="bilinear", align_corners=False)
                scores = scores.flatten(2).transpose(1, 2)     # (b', 4HW, C)
            votes.append(scores.argmax(-1))
        return torch.cat(votes)


def vote_counts(*, votes: Tensor, num_classes: int) -> Tensor:
    """Votes per class. votes (B, V) long -> counts (B, C) long."""
    counts = torch.zeros(votes.shape[0], num_classes, dtype=torch.long, device=votes.device)
    return counts.scatter_add_(1, votes, torch.ones_like(votes))


def zipf_ranks_from_counts(*, counts: Tensor, max_count: int) -> Tensor:
    """Competition ranks of integer counts, ties sharing the lowest: r_k = 1 + #{j : v_j > v_k}.

    Equal to scipy's `rankdata(-counts, method='min', axis=1)`. counts (B, C) with values in
    [0, max_count] -> ranks (B, C) long. O(B*C + B*max_count): a per-row histogram of the counts
    and a reverse cumulative sum, no sort of the C classes.
    """
    b, c = counts.shape
    hist = torch.zeros(b, max_count + 1, dtype=torch.long, device=counts.device)
    hist.scatter_add_(1, counts, torch.ones_like(counts))  # (B, V+1): classes per count value
    greater = c - hist.cumsum(1)  # (B, V+1): classes with a count strictly above n
    return 1 + greater.gather(1, counts)


def ranks_from_logits(*, logits: Tensor) -> Tensor:
    """r_k = 1 + #{j : z_j > z_k} per row, ties sharing the lowest rank (scipy rankdata(-z, 'min')).

    logits (B, C) float -> ranks (B, C) long. O(B*C log C): sorts each row (the non-dense variant).
    """
    z = logits.detach()
    ascending = z.sort(dim=1).values.contiguous()
    not_greater = torch.searchsorted(ascending, z.contiguous(), right=True)  # #{j : z_j <= z_k}
    return 1 + z.shape[1] - not_greater


def rank_weights(*, ranks: Tensor, distribution: str = "zipf", alpha: float | Tensor = 1.0, num_classes: int | None = None,
                 smallest_prob: float | Tensor | None = None, exp_lambda: float | Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    """Unnormalised weight of each rank, as in the official `get_masked_distribution`. ranks -> same shape, float.

    zipf:              (1 / r) ** alpha
    linear_decay:      (C - r) * g + s with g = 2 (1 - C s) / ((C - 1) C), s = smallest_prob (<= 1/C);
                       over ranks 1..C the weights fall linearly from 2/C - s to s and sum to 1.
    exponential_decay: exp(-exp_lambda * (r - 1))
    constant:          1 (uniform over the non-target classes: the 'others' LS target, as a KL)
    random_uniform:    U(0, 1), one draw per entry, independent of the rank (as the official code)
    random_pareto:     Lomax / Pareto II with shape 1, i.e. numpy's `pareto(1)`: exp(E) - 1 with E ~ Exp(1)
    Random draws come from `generator` (on the ranks' device), or the global RNG when None. The float
    parameters may be 0-dim tensors (inputs of a compiled graph rather than constants baked into it).
    """
    shape, device = ranks.shape, ranks.device
    if distribution == "zipf":
        return ranks.float().pow(-alpha)
    if distribution == "linear_decay":
        if smallest_prob is None or num_classes is None:
            raise ValueError("rank_weights: linear_decay needs smallest_prob and num_classes")
        c, s = num_classes, smallest_prob
        gap = 2.0 * (1.0 - c * s) / ((c - 1) * c)
        return (c - ranks.float()) * gap + s
    if distribution == "exponential_decay":
        if exp_lambda is None:
            raise ValueError("rank_weights: exponential_decay needs exp_lambda")
        return torch.exp(-exp_lambda * (ranks.float() - 1.0))
    return rank_free_weights(shape=shape, distribution=distribution, device=device, generator=generator)


def rank_free_weights(*, shape: tuple[int, ...], distribution: str, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> Tensor:
    """The weights of the distributions that ignore the rank: constant, random_uniform, random_pareto."""
    if distribution == "constant":
        return torch.ones(shape, device=device)
    if distribution == "random_uniform":
        return torch.rand(shape, generator=generator, device=device)
    if distribution == "random_pareto":
        e = torch.empty(shape, device=device).exponential_(1.0, generator=generator)
        return torch.expm1(e)
    raise ValueError(f"rank_weights: unknown distribution {distribution!r}; allowed: {', '.join(DISTRIBUTIONS)}")


def nontarget_pdf(*, weights: Tensor, targets: Tensor) -> Tensor:
    """Zero the target column and normalise each row: the Zipf pdf in full layout. (B, C) -> (B, C).

    A row whose non-target weights are all zero (possible with linear_decay, s = 0, C = 2) becomes
    uniform over the non-target classes instead of 0/0.
    """
    c = weights.shape[1]
    w = weights.float().scatter(1, targets[:, None], 0.0)
    z = w.sum(1, keepdim=True)
    uniform = torch.full_like(w, 1.0 / (c - 1)).scatter_(1, targets[:, None], 0.0)
    return torch.where(z > 0, w / z.clamp_min(torch.finfo(w.dtype).tiny), uniform)


def zipf_pdf(*, weights: Tensor, targets: Tensor) -> Tensor:
    """Drop the target column and normalise the remaining C-1 weights. (B, C) -> (B, C-1)."""
    return drop_target(x=nontarget_pdf(weights=weights, targets=targets), targets=targets)


class SparsePdf(NamedTuple):
    """A non-target pdf in full layout that is one constant per row except at a few listed classes.

    With dense votes every unvoted class shares one rank, so a row is `base` everywhere except at
    its voted classes and its target (pdf 0); listing those (votes first, target last) keeps the pdf
    at O(B*V) numbers and lets the loss skip a (B, C) pass. `share` = 1 / (times a class is listed
    in its row), so that sums over the listed entries count each class once.
    """

    base: Tensor  # (B, 1)
    index: Tensor  # (B, K) long
    value: Tensor  # (B, K) pdf at `index`; entries of the same class agree
    share: Tensor  # (B, K)
    neg_entropy: Tensor  # (B,) sum_k pdf_k log pdf_k
    num_classes: int

    def dense(self) -> Tensor:
        """(B, C) in full layout."""
        b = self.base.shape[0]
        return self.base.expand(b, self.num_classes).contiguous().scatter_(1, self.index, self.value)


def densify(pdf: Tensor | SparsePdf) -> Tensor:
    """A pdf as a (B, C) tensor, whichever form it came in."""
    return pdf.dense() if isinstance(pdf, SparsePdf) else pdf


def _vote_multiplicity(votes: Tensor) -> Tensor:
    """For each vote, how many votes of its row name the same class. (B, V) -> (B, V) long, O(B*V log V)."""
    ordered, order = votes.sort(1)  # (B, V)
    new_run = torch.ones_like(ordered, dtype=torch.bool)
    new_run[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run = new_run.long().cumsum(1) - 1  # (B, V): which run of equal classes each sorted vote is in
    run_length = torch.zeros_like(run).scatter_add_(1, run, torch.ones_like(run))
    return torch.empty_like(run).scatter_(1, order, run_length.gather(1, run))  # back to the votes' order


def zipf_pdf_from_votes(*, votes: Tensor, targets: Tensor, num_classes: int, distribution: str = "zipf",
                        alpha: float = 1.0, smallest_prob: float | None = None,
                        exp_lambda: float | None = None) -> SparsePdf:
    """The dense-vote pdf for a rank-based distribution, in O(B*V) numbers (`.dense()` gives (B, C)).

    Equal to `nontarget_pdf(rank_weights(zipf_ranks_from_counts(vote_counts(votes))))`, but a class's
    weight depends only on its vote count, and a row has at most V+1 distinct counts (every unvoted
    class shares count 0, hence one rank, one past the voted ones). So ranks, weights, the
    normaliser and the entropy are computed per vote and per count value: votes are counted by
    sorting each row's V votes, O(B*V log V), and nothing here touches all C classes. votes (B, V) long.
    """
    b, v = votes.shape
    c = num_classes
    vote_count = _vote_multiplicity(votes)  # (B, V): count of each vote's class
    target_count = (votes == targets[:, None]).sum(1, keepdim=True)  # (B, 1)
    # a class with count n >= 1 appears n times among the votes: n * (#classes with count n) per bin
    mass = torch.zeros(b, v + 1, device=votes.device).scatter_add_(1, vote_count, torch.ones(b, v, device=votes.device))
    hist = mass / torch.arange(v + 1, device=votes.device).clamp_min(1)  # (B, V+1): classes per count (exact)
    hist[:, 0] = c - hist[:, 1:].sum(1)
    rank_of_count = 1 + (c - hist.cumsum(1))  # (B, V+1): 1 + #{classes with a larger count}
    w = rank_weights(ranks=rank_of_count, distribution=distribution, alpha=alpha, num_classes=c,
                     smallest_prob=smallest_prob, exp_lambda=exp_lambda)  # (B, V+1)
    nontarget_hist = hist.scatter_add(1, target_count, hist.new_full((b, 1), -1.0))  # (B, V+1)
    total = (nontarget_hist * w).sum(1, keepdim=True)  # (B, 1)
    p = torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), torch.full_like(w, 1.0 / (c - 1)))
    neg_entropy = (nontarget_hist * torch.xlogy(p, p)).sum(1)  # (B,)
    is_target = votes == targets[:, None]  # (B, V)
    index = torch.cat([votes, targets[:, None]], dim=1)  # (B, V+1)
    value = torch.cat([torch.where(is_target, 0.0, p.gather(1, vote_count)), p.new_zeros(b, 1)], dim=1)
    listed = torch.cat([vote_count + is_target.long(), target_count + 1], dim=1)  # times each class is listed
    return SparsePdf(base=p[:, :1], index=index, value=value, share=1.0 / listed, neg_entropy=neg_entropy,
                     num_classes=c)


def zipf_kl(*, logits: Tensor, pdf: Tensor, targets: Tensor, mask: bool = False) -> Tensor:
    """The Zipf loss: mean_i sum_k pdf_k (log pdf_k - logq_k), logq = log_softmax of the non-target logits.

    logits (B, C); pdf (B, C-1) or (B, C) in full layout (its target column is ignored); -> ().
    `mask`: average over the samples whose argmax is the target only; 0 if there are none.
    This is the plain reference; `ce_and_zipf_kl` computes the same with a fused backward.
    """
    if pdf.shape[1] == logits.shape[1]:
        pdf = drop_target(x=pdf, targets=targets)
    pdf = pdf.detach()
    logq = F.log_softmax(drop_target(x=logits, targets=targets), dim=1)  # (B, C-1)
    kl = (torch.xlogy(pdf, pdf) - pdf * logq).sum(1)  # (B,)
    if mask:
        return masked_mean(values=kl, mask=logits.detach().argmax(1) == targets)
    return kl.mean()


class _CEAndZipfKL(torch.autograd.Function):
    """Cross-entropy and the non-target KL from one softmax over the non-target logits, fused backward.

    One (B, C) buffer: the masked copy of the logits becomes exp(z - m) in place, then the gradient.

    With q = softmax of z over the non-target classes (q_y = 0) and L = log sum_{k != y} exp z_k:
      logq_k = z_k - L;   lse = logaddexp(L, z_y);   ce_i = lse - z_y
      kl_i   = sum_k pdf_k log pdf_k - sum_k pdf_k z_k + L            (pdf sums to 1, pdf_y = 0)
      d ce_i / dz_k = softmax(z)_k - onehot_k,  softmax(z)_k = q_k exp(L - lse) for k != y
      d kl_i / dz   = q - pdf                                        (0 in the target column)
    L = m + log sum_k exp(z_k - m) with m the largest non-target logit (the sum is >= 1), so this
    stays exact however confident the sample is (no 1 - p_y cancellation). A `SparsePdf`
    (constant per row except at listed classes) turns sum_k pdf_k z_k and the pdf term of the
    gradient into a row constant plus O(B*K) corrections.
    """

    @staticmethod
    def forward(ctx, logits, targets, kl_weight, pdf, neg_entropy):
        b = logits.shape[0]
        t = targets[:, None]
        z_y = logits.gather(1, t)  # (B, 1)
        e = logits.scatter(1, t, float("-inf"))  # (B, C) working copy, exponentiated in place
        m = e.amax(1, keepdim=True)  # (B, 1)
        e.sub_(m).exp_()  # exp(z - m), 0 in the target column; q = e / s is never materialised
        s = e.sum(1, keepdim=True)  # >= 1: the largest entry is exp(0)
        lse_nt = m + s.log()  # (B, 1)
        lse = torch.logaddexp(lse_nt, z_y)
        ce = (lse - z_y).sum() / b
        if isinstance(pdf, SparsePdf):
            listed = logits.gather(1, pdf.index)  # (B, K)
            cross = pdf.base[:, 0] * logits.sum(1) + (pdf.share * (pdf.value - pdf.base) * listed).sum(1)  # (B,)
            neg_entropy = pdf.neg_entropy
        else:
            cross = torch.linalg.vecdot(pdf, logits, dim=1)  # (B,) sum_k pdf_k z_k
            if neg_entropy is None:
                neg_entropy = torch.xlogy(pdf, pdf).sum(1)
        kl = ((neg_entropy - cross + lse_nt[:, 0]) * kl_weight).sum()
        ctx.save_for_backward(s, lse_nt, lse, z_y, kl_weight, targets)
        ctx.e, ctx.pdf = e, pdf  # an intermediate: backward overwrites it with the gradient
        return ce, kl

    @staticmethod
    def backward(ctx, g_ce, g_kl):
        s, lse_nt, lse, z_y, kl_weight, targets = ctx.saved_tensors
        e, pdf = ctx.e, ctx.pdf
        if e is None:
            raise RuntimeError("ce_and_zipf_kl: a second backward through the same graph is not supported")
        ctx.e = None
        b = e.shape[0]
        a_kl = g_kl * kl_weight[:, None]  # (B, 1)
        a_e = (g_ce / b * torch.exp(lse_nt - lse) + a_kl) / s  # (B, 1): the factor of q = e / s, over s
        # the gradient is written into e's buffer: a fresh (B, C) costs page faults on the CPU
        if isinstance(pdf, SparsePdf):
            e_listed = e.gather(1, pdf.index)  # (B, K)
            grad = e.mul_(a_e).sub_(pdf.base * a_kl)  # q * a_q - base * a_kl (a broadcast addcmul is slower)
            grad.scatter_(1, pdf.index, e_listed * a_e - pdf.value * a_kl)
        else:
            grad = e.mul_(a_e).addcmul_(pdf, a_kl, value=-1.0)
        p_y = torch.exp(z_y - lse)  # (B, 1)
        grad.scatter_(1, targets[:, None], g_ce / b * (p_y - 1.0))
        return grad, None, None, None, None


def ce_and_zipf_kl(*, logits: Tensor, targets: Tensor, pdf: Tensor | SparsePdf, mask: bool = False,
                   pdf_neg_entropy: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(CE(z), zipf_kl(z, pdf)) in one pass; gradients flow into `logits` only.

    logits (B, C) (computed in float32); pdf a `SparsePdf` or (B, C) in full layout (0 in the
    target column, rows sum to 1), treated as a constant; pdf_neg_entropy (B,) = sum_k pdf_k log pdf_k
    if already known for a dense pdf.
    """
    z = logits.float()
    if mask:
        cw = (z.detach().argmax(1) == targets).float()
        kl_weight = cw / cw.sum().clamp_min(1.0)  # mean over the correct ones, all-zero when none
    else:
        kl_weight = torch.full((z.shape[0],), 1.0 / z.shape[0], device=z.device)
    if not isinstance(pdf, SparsePdf):
        pdf = pdf.detach().float()
    ne = None if pdf_neg_entropy is None else pdf_neg_entropy.detach().float()
    return _CEAndZipfKL.apply(z, targets, kl_weight, pdf, ne)


__all__ = [
    "DISTRIBUTIONS", "RANK_DISTRIBUTIONS", "RANK_FREE_DISTRIBUTIONS", "SparsePdf",
    "ce_and_zipf_kl", "cskd_kd", "dense_votes", "densify", "drop_target", "insert_target_zero", "ls_parts", "ls_target",
    "masked_mean", "nontarget_pdf", "ols_accumulate_", "ols_matrix", "one_hot", "pskd_alpha", "pskd_target",
    "rank_free_weights", "rank_weights", "ranks_from_logits", "soft_cross_entropy", "tfkd_kd", "tfkd_teacher", "vote_counts",
    "zipf_kl", "zipf_pdf", "zipf_pdf_from_votes", "zipf_ranks_from_counts",
]
