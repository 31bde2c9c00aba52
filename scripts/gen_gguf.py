#!/usr/bin/env python3
"""Writes a GGUF file laid out like a 4-bit llama.cpp model (TinyLlama's shapes: 22 layers,
hidden 2048, feed-forward 5632, grouped K/V): Q4_K matrices, F32 norms, written with
gguf.GGUFWriter in the order llama.cpp's converter writes them. The Q4_K blocks are random bytes
(a reader that maps and touches the tensors does not decode them; real Q4_K blocks compress
about as little). Usage: gen_gguf.py OUT [--layers 22] [--seed 0]"""
import argparse

import gguf
import numpy as np

HIDDEN, FFN, KV, VOCAB = 2048, 5632, 256, 32000


def q4k(rng, rows, cols):
    """A Q4_K matrix of rows x cols values, as its bytes (144 per block of 256 values)."""
    block, size = gguf.constants.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q4_K]
    return rng.integers(0, 256, size=(rows, cols // block * size), dtype=np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    w = gguf.GGUFWriter(args.out, "llama")
    w.add_block_count(args.layers)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(32)
    w.add_head_count_kv(4)
    q4 = gguf.GGMLQuantizationType.Q4_K
    w.add_tensor("token_embd.weight", q4k(rng, VOCAB, HIDDEN), raw_dtype=q4)
    for i in range(args.layers):
        b = f"blk.{i}"
        w.add_tensor(f"{b}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        for name, rows in (("attn_q", HIDDEN), ("attn_k", KV), ("attn_v", KV), ("attn_output", HIDDEN)):
            w.add_tensor(f"{b}.{name}.weight", q4k(rng, rows, HIDDEN), raw_dtype=q4)
        w.add_tensor(f"{b}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        w.add_tensor(f"{b}.ffn_gate.weight", q4k(rng, FFN, HIDDEN), raw_dtype=q4)
        w.add_tensor(f"{b}.ffn_up.weight", q4k(rng, FFN, HIDDEN), raw_dtype=q4)
        w.add_tensor(f"{b}.ffn_down.weight", q4k(rng, HIDDEN, FFN), raw_dtype=q4)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    w.add_tensor("output.weight", q4k(rng, VOCAB, HIDDEN), raw_dtype=q4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
