"""Calibration: the published measurements we have a chip profile and a model spec for, projected and compared.

Rows are data transcribed from ../shared/data/published-results.md with their source tags. A row's
metric is tokens/s per user (1 / inter-token latency), aggregate output tokens/s of the decode steps, output
tokens/s end to end (a throughput benchmark's: the batch's output tokens over the time from the start of its
prefill to its last token), or TTFT in seconds.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .chip import load_chip
from .errors import WorkbenchError
from .model.specs import load_spec
from .projection import project

LOW, HIGH = 0.67, 1.5   # the target band of projected / published
METRICS = {"tokens_per_s_per_user": "tok/s/user", "tokens_per_s": "tok/s", "e2e_tokens_per_s": "tok/s e2e",
           "ttft_s": "TTFT s"}


@dataclass(frozen=True)
class Row:
    """One published figure. chips = 0 means the profile's whole system."""

    source: str
    model: str
    chip: str
    precision: str
    batch: int
    prompt_len: int
    gen_len: int
    metric: str
    published: float
    chips: int = 0
    note: str = ""


_TT = "n/s in the source; projected at int8 (TT demos use bfp8 blocks, ~8.5 bits like Q8_0)"
_TT_TTFT = "TT prefills one user at a time: TTFT of one 128-token prompt"
_E2E = "output tokens over the whole run, the batch's prefill included"
_T3000 = ("T3000 (4 x n300 = 8 Wormhole, the QuietBox's chips), mid-2024 release: device-only t/s/u of the 129th "
          "token; ")
ROWS: tuple[Row, ...] = (
    Row("T10", "llama-3.1-70b", "tenstorrent-wormhole-galaxy", "int8", 32, 128, 1, "tokens_per_s_per_user", 72.5,
        note="t/s/u = 1/ITL of the first decoded token after a 128-token prefill (chip-specs caveat 12); " + _TT),
    Row("T10", "llama-3.1-70b", "tenstorrent-wormhole-galaxy", "int8", 1, 128, 1, "ttft_s", 0.053, note=_TT_TTFT),
    Row("T10", "llama-3.1-70b", "tenstorrent-wormhole-quietbox", "int8", 32, 128, 1, "tokens_per_s_per_user", 15.9,
        note=_TT),
    Row("T10", "llama-3.1-70b", "tenstorrent-wormhole-quietbox", "int8", 1, 128, 1, "ttft_s", 0.159, note=_TT_TTFT),
    Row("T10", "llama-3.1-70b", "tenstorrent-blackhole-quietbox", "int8", 32, 128, 1, "tokens_per_s_per_user", 14.9,
        note="BH software under active development; " + _TT),
    Row("T10", "llama-3.1-70b", "tenstorrent-blackhole-quietbox", "int8", 1, 128, 1, "ttft_s", 0.188,
        note="BH software under active development; " + _TT_TTFT),
    Row("T10", "llama-3.1-8b", "tenstorrent-wormhole-n150", "int8", 32, 128, 1, "tokens_per_s_per_user", 26.0, note=_TT),
    Row("T10", "llama-3.1-8b", "tenstorrent-wormhole-n150", "int8", 1, 128, 1, "ttft_s", 0.104, note=_TT_TTFT),
    Row("T10", "llama-3.1-8b", "tenstorrent-blackhole-p100a", "int8", 32, 128, 1, "tokens_per_s_per_user", 29.0,
        note="BH software under active development; " + _TT),
    Row("T10", "llama-3.1-8b", "tenstorrent-blackhole-p100a", "int8", 1, 128, 1, "ttft_s", 0.061,
        note="BH software under active development; " + _TT_TTFT),
    Row("T10", "llama-3.1-8b", "tenstorrent-blackhole-p150", "int8", 32, 128, 1, "tokens_per_s_per_user", 33.1, note=_TT),
    Row("T10", "llama-3.1-8b", "tenstorrent-blackhole-p150", "int8", 1, 128, 1, "ttft_s", 0.057, note=_TT_TTFT),
    Row("T10", "mistral-7b", "tenstorrent-wormhole-n150", "int8", 32, 128, 1, "tokens_per_s_per_user", 28.7, note=_TT),
    Row("T10", "mistral-7b", "tenstorrent-wormhole-n150", "int8", 1, 128, 1, "ttft_s", 0.099, note=_TT_TTFT),
    Row("T10", "mixtral-8x7b", "tenstorrent-wormhole-quietbox", "int8", 32, 128, 1, "tokens_per_s_per_user", 24.9,
        note=_TT),
    Row("T10", "mixtral-8x7b", "tenstorrent-wormhole-quietbox", "int8", 1, 128, 1, "ttft_s", 0.122, note=_TT_TTFT),
    Row("T12", "llama-2-70b", "tenstorrent-wormhole-quietbox", "int8", 32, 128, 1, "tokens_per_s_per_user", 13.9,
        note=_T3000 + "8.5 end to end"),
    Row("T12", "llama-3.1-70b", "tenstorrent-wormhole-quietbox", "int8", 32, 128, 1, "tokens_per_s_per_user", 13.9,
        note="Llama-3-70B (the 3.1 shapes); " + _T3000 + "8.1 end to end"),
    Row("T12", "mixtral-8x7b", "tenstorrent-wormhole-quietbox", "int8", 32, 128, 1, "tokens_per_s_per_user", 27.0,
        note=_T3000 + "7.0 end to end"),
    Row("N10", "llama-3.3-70b", "nvidia-h100-x2", "fp8", 1, 5000, 500, "tokens_per_s_per_user", 53.8,
        note="NIM 1.8.0, C=1, ITL 18.58 ms"),
    Row("N10", "llama-3.3-70b", "nvidia-h100-x2", "fp8", 1, 5000, 500, "ttft_s", 0.40677, note="NIM 1.8.0, C=1"),
    Row("N10", "llama-3.3-70b", "nvidia-h100-x2", "fp8", 1, 500, 2000, "tokens_per_s_per_user", 52.9,
        note="NIM 1.8.0, C=1, ITL 18.91 ms"),
    Row("N10", "llama-3.3-70b", "nvidia-h100-x2", "fp8", 1, 500, 2000, "ttft_s", 0.04777, note="NIM 1.8.0, C=1"),
    *(Row("N14", "llama-2-70b", "nvidia-h100-x8", "fp8", 64, isl, osl, "e2e_tokens_per_s", tps, chips=4,
          note="TRT-LLM v0.5.0 throughput benchmark on 4 x H100 (the x8 board's profile with 4 chips): " + _E2E)
      for isl, osl, tps in ((128, 128, 3317.0), (128, 2048, 2616.0), (2048, 128, 843.0), (2048, 2048, 1583.0))),
    Row("N9", "llama-2-70b", "nvidia-h200-sxm", "fp8", 512, 128, 128, "e2e_tokens_per_s", 3014.0,
        note="TRT-LLM v0.5.0 throughput benchmark, 'llama_70b' on 1 x H200: " + _E2E),
    Row("N9", "llama-2-70b", "nvidia-h200-x8", "fp8", 512, 128, 2048, "e2e_tokens_per_s", 6616.0, chips=4,
        note="TRT-LLM v0.5.0, 'llama_70b' TP4 on an HGX H200: " + _E2E),
    Row("N9", "llama-2-70b", "nvidia-h200-x8", "fp8", 64, 2048, 128, "e2e_tokens_per_s", 682.0, chips=2,
        note="TRT-LLM v0.5.0, 'llama_70b' TP2 on an HGX H200: " + _E2E),
    *(Row("A9", "llama-3.1-405b", "amd-mi300x-x8", "fp8", b, 128, 128, "e2e_tokens_per_s", tps,
          note=f"OCI vLLM, B={b}: " + ("128 tokens in 3.53 s, prefill included" if b == 1 else _E2E))
      for b, tps in ((1, 36.0), (8, 258.0), (32, 798.0), (64, 1184.0), (256, 1846.0))),
)


def calibrate(rows: tuple[Row, ...] = ROWS) -> dict:
    """Project every row; returns {"rows": [...], "median_error": |ratio - 1| median, "outside": count}."""
    out = []
    chips, specs = {}, {}
    for r in rows:
        chip = chips.get(r.chip) or chips.setdefault(r.chip, load_chip(r.chip))
        cfg = specs.get(r.model) or specs.setdefault(r.model, load_spec(r.model))
        try:
            p = project(chip, cfg, precision=r.precision, batch=r.batch, prompt_len=r.prompt_len, gen_len=r.gen_len,
                        chips=r.chips or None, end_to_end=r.metric == "e2e_tokens_per_s")
        except WorkbenchError as exc:
            out.append({**_row_dict(r), "projected": None, "ratio": None, "within": False, "error": str(exc)})
            continue
        projected = float(getattr(p, r.metric))
        ratio = projected / r.published
        out.append({**_row_dict(r), "projected": projected, "ratio": ratio, "within": LOW <= ratio <= HIGH,
                    "fits": p.fits, "mapping": p.mapping, "bound": p.bound})
    ratios = [abs(x["ratio"] - 1) for x in out if x["ratio"] is not None]
    return {"rows": out, "median_error": statistics.median(ratios) if ratios else None,
            "outside": sum(1 for x in out if not x["within"]), "band": [LOW, HIGH]}


def _row_dict(r: Row) -> dict:
    return {"source": r.source, "model": r.model, "chip": r.chip, "chips": r.chips, "precision": r.precision,
            "batch": r.batch, "prompt_len": r.prompt_len, "gen_len": r.gen_len, "metric": r.metric,
            "published": r.published, "note": r.note}
