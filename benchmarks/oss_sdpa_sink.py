"""The oss attention as written out in zoo/oss.py against torch's SDPA with the sink folded in as one extra key
(its score is the head's sink logit, its value zero): checks that logits and gradients agree, then times training
steps of both and of gpt2 at one thread, alternating (docs/oss.md, "Quality against the gpt2 block"):

    taskset -c 0 .venv/bin/python benchmarks/oss_sdpa_sink.py [layers] [rounds]
"""

import sys
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from oss_step import median_step_ms  # noqa: E402

from gptzoo.trainer.config import TrainConfig  # noqa: E402
from gptzoo.zoo import oss  # noqa: E402
from gptzoo.zoo.arch import make_model  # noqa: E402
from gptzoo.zoo.oss import rope, visible  # noqa: E402


def sdpa_forward(self, x, positions):
    B, T, C = x.shape
    q, k, v = self.qkv(x).split([C, self.kv_heads * self.hd, self.kv_heads * self.hd], dim=2)
    q = rope(q.view(B, T, self.n_head, self.hd).transpose(1, 2), positions, self.theta)
    k = rope(k.view(B, T, self.kv_heads, self.hd).transpose(1, 2), positions, self.theta)
    v = v.view(B, T, self.kv_heads, self.hd).transpose(1, 2)
    # The sink key, shared by every kv head, is 1 in an extra coordinate where real keys hold 0; each query head
    # holds its sink logit / scale there, so the sink's score is exactly that logit. Its value is zero.
    q1 = torch.cat((q, (self.sinks / self.scale).view(1, -1, 1, 1).expand(B, -1, T, 1)), -1)
    k1 = torch.cat((k, k.new_zeros(B, self.kv_heads, T, 1)), -1)
    sink = k.new_zeros(B, self.kv_heads, 1, self.hd + 1)
    sink[..., -1] = 1.0
    k1, v1 = torch.cat((sink, k1), 2), torch.cat((v.new_zeros(B, self.kv_heads, 1, self.hd), v), 2)
    pos = positions.expand(B, T)
    vis = visible(pos, pos, self.window)
    mask = torch.cat((vis.new_ones(B, T, 1), vis), -1).unsqueeze(1)
    y = F.scaled_dot_product_attention(q1, k1, v1, attn_mask=mask, scale=self.scale, enable_gqa=True)
    return self.drop(self.o_proj(y.transpose(1, 2).reshape(B, T, C)))


def agreement() -> None:
    cfg = TrainConfig.from_preset("cpu", 2, cuda_available=False, arch="oss")
    torch.manual_seed(0)
    m = make_model(cfg.model_args(65))
    with torch.no_grad():
        for b in m.modules():
            if isinstance(b, oss.OSSAttention):
                b.sinks.normal_()
    x = torch.randint(0, 65, (3, cfg.block_size))
    out = []
    for fwd in (written_out, sdpa_forward):
        oss.OSSAttention.forward = fwd
        m.zero_grad()
        logits, loss = m(x, x)
        loss.backward()
        out.append((logits.detach(), [p.grad.clone() for p in m.parameters()]))
    (l1, g1), (l2, g2) = out
    print(f"max |dlogits| {(l1 - l2).abs().max().item():.1e}, max |dgrad| "
          f"{max((a - b).abs().max().item() for a, b in zip(g1, g2, strict=True)):.1e}")


written_out = oss.OSSAttention.forward
if __name__ == "__main__":
    torch.set_num_threads(1)
    layers, rounds = (int(a) for a in (sys.argv[1:] + ["4", "3"])[:2])
    agreement()
    for r in range(rounds):
        oss.OSSAttention.forward = written_out
        a = median_step_ms("oss", layers, 8)[0]
        oss.OSSAttention.forward = sdpa_forward
        b = median_step_ms("oss", layers, 8)[0]
        g = median_step_ms("gpt2", layers, 8)[0]
        print(f"round {r}: gpt2 {g:.1f} ms, oss written out {a:.1f} ms ({a / g:.2f}x), oss SDPA {b:.1f} ms "
              f"({b / g:.2f}x)")
