"""How the benchmark scripts report their targets: one line per check (met or MISSED, the value
and what it needs), and the results with the checks written to OUT/NAME as JSON."""
import json
import os


def report(checks, results, out, name):
    """`checks`: (description, value, needed) tuples, met when value >= needed."""
    print()
    for check, v, need in checks:
        print(f"  [{'met' if v >= need else 'MISSED'}] {check}: {v:.3f} (needs >= {need})")
    results["checks"] = [{"check": n, "value": v, "needed": need, "met": v >= need} for n, v, need in checks]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {out}/{name}")
