"""Run by the doctor as ``python -m starchart.doctor.bnb_probe``: does bitsandbytes work?

A separate process because loading bitsandbytes' native library can print
pages of set-up output, crash or hang on a mismatched CUDA; the doctor only
reads the one JSON line printed last. The functional check is a small 8-bit
linear layer on the GPU, the same kind of work ``python -m bitsandbytes`` does.
"""

from __future__ import annotations

import json
import traceback


def main() -> None:
    result: dict[str, object] = {"imported": False, "version": None, "native": False,
                                 "matmul": False, "error": None}
    try:
        import bitsandbytes as bnb

        result.update(imported=True, version=getattr(bnb, "__version__", None))
        from bitsandbytes import cextension

        # Without a native library for this CUDA, recent releases put a stand-in
        # object here that raises on first use.
        lib = getattr(cextension, "lib", None)
        result["native"] = lib is not None and "Mock" not in type(lib).__name__
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False")
        layer = bnb.nn.Linear8bitLt(64, 32, has_fp16_weights=False, threshold=6.0).cuda()
        x = torch.randn(4, 64, dtype=torch.float16, device="cuda")
        y = layer(x)
        torch.cuda.synchronize()
        result["matmul"] = tuple(y.shape) == (4, 32) and bool(torch.isfinite(y).all())
    except BaseException:  # noqa: BLE001 - everything is reported, nothing raised
        result["error"] = "".join(traceback.format_exc()[-4000:])
    print("\n" + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
