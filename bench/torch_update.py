"""The PPO update of `proxima-bench update` in PyTorch, for a side-by-side learner figure: the same synthetic
batch shape, minibatch, epochs, model (MLP, or the Nature / MinAtar CNN, separate or shared trunks, as
docs/model-spec.md describes them) and loss (clipped surrogate, normalised advantages, unclipped value loss with
coefficient 0.5, no entropy term, global grad-norm clip 0.5, Adam), on `--threads` torch threads. Prints one JSON
line with samples/s.

    python bench/torch_update.py --preset minatar_cnn --obs-shape 10,10,4 --actions 6 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn

PRESETS = {
    "nature_cnn": ([(32, 8, 4), (64, 4, 2), (64, 3, 1)], [512]),
    "minatar_cnn": ([(16, 3, 1)], [128]),
}


def trunk(
    obs_shape: list[int],
    conv: list[tuple[int, int, int]],
    hidden: list[int],
    out: int | None,
) -> nn.Module:
    """A Sequential of the convolutions (channels-last input permuted first), the flatten and the Linear layers."""
    layers: list[nn.Module] = []
    if conv:
        h, w, c = (
            obs_shape
            if obs_shape[-1] <= obs_shape[0]
            else (obs_shape[1], obs_shape[2], obs_shape[0])
        )
        for oc, k, s in conv:
            layers += [nn.Conv2d(c, oc, k, s), nn.ReLU()]
            c, h, w = oc, (h - k) // s + 1, (w - k) // s + 1
        layers.append(nn.Flatten())
        width = c * h * w
    else:
        width = math.prod(obs_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU() if conv else nn.Tanh()]
        width = size
    if out is not None:
        layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


class Agent(nn.Module):
    def __init__(
        self,
        obs_shape: list[int],
        conv: list,
        hidden: list[int],
        actions: int,
        shared: bool,
    ) -> None:
        super().__init__()
        self.obs_shape, self.channels_last = (
            obs_shape,
            bool(conv) and obs_shape[-1] <= obs_shape[0],
        )
        self.shared = shared
        if shared:
            self.network = trunk(obs_shape, conv, hidden, None)
            self.actor, self.critic = (
                nn.Linear(hidden[-1], actions),
                nn.Linear(hidden[-1], 1),
            )
        else:
            self.actor = trunk(obs_shape, conv, hidden, actions)
            self.critic = trunk(obs_shape, conv, hidden, 1)
        self.conv = bool(conv)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.conv:
            x = x.reshape(len(x), *self.obs_shape)
            if self.channels_last:
                x = x.permute(0, 3, 1, 2)
        if self.shared:
            f = self.network(x)
            return self.actor(f), self.critic(f).squeeze(1)
        return self.actor(x), self.critic(x).squeeze(1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--obs-shape", default="4")
    p.add_argument("--hidden", default="64,64")
    p.add_argument("--actions", type=int, default=2)
    p.add_argument("--shared-trunk", action="store_true")
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--minibatch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=0.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    obs_shape = [int(v) for v in a.obs_shape.split(",")]
    conv, hidden = (
        PRESETS[a.preset] if a.preset else ([], [int(v) for v in a.hidden.split(",")])
    )
    agent = Agent(obs_shape, conv, hidden, a.actions, a.shared_trunk)
    opt = torch.optim.Adam(agent.parameters(), lr=1e-4, eps=1e-5)
    n = max(a.batch, a.minibatch)
    obs = torch.randn(n, math.prod(obs_shape))
    actions = torch.arange(n) % a.actions
    old_logp = torch.full((n,), -math.log(a.actions))
    adv, ret = torch.randn(n), torch.randn(n)

    def epoch() -> None:
        for idx in torch.randperm(n).split(a.minibatch):
            logits, value = agent(obs[idx])
            logp = torch.distributions.Categorical(logits=logits).log_prob(actions[idx])
            ratio = (logp - old_logp[idx]).exp()
            mb_adv = adv[idx]
            mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            pg = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(0.8, 1.2)).mean()
            loss = pg + 0.5 * 0.5 * ((value - ret[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
            opt.step()

    epoch()  # warm-up
    started, epochs = time.perf_counter(), 0
    while True:
        for _ in range(a.epochs):
            epoch()
        epochs += a.epochs
        if time.perf_counter() - started >= a.min_seconds:
            break
    seconds = time.perf_counter() - started
    params = sum(t.numel() for t in agent.parameters())
    print(
        json.dumps(
            {
                "workload": "torch_update",
                "torch": torch.__version__,
                "threads": a.threads,
                "parameters": params,
                "batch": n,
                "minibatch": a.minibatch,
                "epochs": epochs,
                "seconds": seconds,
                "samples_per_s": epochs * n / seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
