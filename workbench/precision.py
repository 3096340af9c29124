"""Precisions the workbench knows, and which weight block format each one executes.

A precision names how a chip multiplies (``int8`` = int8 x int8 -> int32); the block
format names how weights are stored (GGUF's Q8_0 for int8, Q4_0 for int4, TQ2_0 for
ternary, our own B1_0 for binary, plain floats for f32/fp16/bf16).
"""

from __future__ import annotations

# Every precision a chip profile may give a MAC rate and a MAC energy for.
CHIP_PRECISIONS = ("f32", "fp16", "bf16", "fp8", "int8", "int4", "ternary", "binary")

# Precisions the emulated machine can execute numerically, and their weight format.
WEIGHT_FORMAT = {
    "f32": "f32",
    "fp16": "f16",
    "bf16": "bf16",
    "int8": "q8_0",
    "int4": "q4_0",
    "ternary": "tq2_0",
    "binary": "b1_0",
}
EMULATED_PRECISIONS = tuple(WEIGHT_FORMAT)

# When a chip has no native unit for a precision it runs it on the next wider one
# (int4 weights are widened to int8 in the MAC array, and so on).
FALLBACK = {
    "binary": "ternary",
    "ternary": "int4",
    "int4": "int8",
    "int8": "fp8",
    "fp8": "fp16",
    "fp16": "bf16",
    "bf16": "f32",
    "f32": None,
}

# Bits per weight as stored, including the block scale (used for shape-only sizing).
BITS_PER_WEIGHT = {
    "f32": 32.0,
    "fp16": 16.0,
    "bf16": 16.0,
    "fp8": 8.0,
    "int8": 34 * 8 / 32,      # Q8_0: 32 int8 + f16 scale
    "int4": 18 * 8 / 32,      # Q4_0: 16 bytes of nibbles + f16 scale
    "ternary": 66 * 8 / 256,  # TQ2_0: 64 bytes of 2-bit codes + f16 scale per 256
    "binary": 6 * 8 / 32,     # B1_0: 4 bytes of sign bits + f16 scale per 32
}
