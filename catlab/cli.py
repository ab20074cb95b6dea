"""The `catlab` command (also `python -m catlab`).

Exit codes: 0 success; 2 usage or validation error (one line on stderr); 1 a run that failed.
`--debug` shows the traceback instead of the one-line message.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from catlab.errors import RunFailed, UserError
from catlab.profiles import DEFAULT, PROFILES


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise UserError(message)

    def _get_values(self, action, arg_strings):  # `--n=--` (argparse 3.11 would give [] unconverted)
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected one argument")
        return super()._get_values(action, arg_strings)


def _one_line(message) -> str:
    """A message with the characters that could break it into lines (from a path, an override) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


def _overrides(p):
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=400")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="catlab", description="Cross-scale alignment in multi-scale GANs (CAT).")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one config")
    _overrides(t)
    t.add_argument("--config", help="a config.json to start from (overrides apply on top)")
    t.add_argument("--run-dir", help="default: <run.root>/<config hash>-s<seed>")
    t.add_argument("--dry-run", action="store_true", help="validate and print the plan; train nothing")

    s = sub.add_parser("sample", help="write uint8 PNGs from a run's EMA generator",
                       description="Write uint8 PNGs (NNNNN_classY.png) of one stage from a run's EMA generator. "
                       "Latent runs (data.name=latents:PATH) are decoded to PNGs with the local diffusers "
                       "AutoencoderKL at $CATLAB_VAE; without it (one notice line) the stage's latents go to "
                       "OUT/latents_stageK.npz instead: latents (N, C, s, s) float32 divided by the scale "
                       "factor (ready for vae.decode), labels (N,), scale_factor, seed, stage -- the same "
                       "format as a latents:PATH dataset.")
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", required=True)
    s.add_argument("--stage", type=int, default=None, help="stage 1..K (default: the final stage)")
    s.add_argument("--seed", type=int, default=0)

    a = sub.add_parser("ablate", help="run a study (a grid of configs)")
    a.add_argument("study")
    _overrides(a)
    a.add_argument("--profile", default=DEFAULT, choices=list(PROFILES))
    a.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the study's)")
    a.add_argument("--workers", type=int, default=1)
    a.add_argument("--dry-run", action="store_true", help="print the grid; train nothing")
    a.add_argument("--storage", default=None, help="Optuna storage URL: pull cells across machines")

    z = sub.add_parser("analyze", help="quality and misalignment tables for a run dir or a study")
    z.add_argument("target", help="RUN_DIR or STUDY")
    z.add_argument("--metrics", nargs="+", default=None)
    z.add_argument("--n", type=int, default=None, help="samples per evaluation")
    z.add_argument("--profile", default=DEFAULT, choices=list(PROFILES))

    q = sub.add_parser("search", help="Optuna hyperparameter search over a study's search space")
    q.add_argument("study")
    _overrides(q)
    q.add_argument("--trials", type=int, required=True)
    q.add_argument("--storage", default=None)
    q.add_argument("--workers", type=int, default=1)
    q.add_argument("--objective", default="fid", choices=["fid", "fid+misalignment"])
    q.add_argument("--timeout", type=float, default=None)
    q.add_argument("--profile", default=DEFAULT, choices=list(PROFILES))

    r = sub.add_parser("report", help="figures, tables and HTML for a study")
    r.add_argument("study")
    r.add_argument("--figures-only", action="store_true")
    r.add_argument("--profile", default=DEFAULT, choices=list(PROFILES))

    e = sub.add_parser("encode", help="encode images to VAE latents: a latent store for data.name=latents:PATH",
                       description="Encode an image folder (one subfolder per class) or torchvision:NAME (read "
                       "from --root, never downloaded) to SD-VAE latents with a local diffusers AutoencoderKL: "
                       "ADM centre crop to --resolution, optional horizontal-flip copies, posterior mean times "
                       "--scale-factor, into a latent store (latents.npy, labels.npy, manifest.json) that "
                       "data.name=latents:OUT reads memory-mapped. Run the same command again to resume. "
                       "Needs pip install -e '.[latent]'. See docs/latents.md.")
    e.add_argument("source", help="an image folder, or torchvision:NAME (e.g. torchvision:CIFAR10)")
    e.add_argument("--out", required=True, help="the store folder (new, or an interrupted encode's)")
    e.add_argument("--vae", default=None, help="a local diffusers AutoencoderKL folder (default: $CATLAB_VAE)")
    e.add_argument("--resolution", type=int, default=256)
    e.add_argument("--flip", action="store_true", help="also store each image's horizontal mirror")
    e.add_argument("--batch", type=int, default=32, help="images per encoder batch")
    e.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    e.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    e.add_argument("--scale-factor", type=float, default=0.18215)
    e.add_argument("--root", default="", help="torchvision data root (default: $CATLAB_DATA or ./data)")
    e.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="image decoding threads")

    lst = sub.add_parser("list", help="what exists")
    lst.add_argument("what", choices=["studies", "datasets", "models"])

    y = sub.add_parser("sync", help="send a run's JSONL metrics to MLflow (after an outage)")
    y.add_argument("run_dir")
    return p


# ---- commands -----------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from catlab.config import load_config, load_config_json
    base = load_config_json(args.config) if args.config else None
    cfg = load_config(args.overrides, base)
    if args.dry_run:
        return _plan(cfg, args.run_dir)
    from catlab.trainer import train
    result = train(cfg, run_dir=args.run_dir)
    if os.environ.get("RANK", "0") == "0":
        print(f"{result.status}: {result.run_dir} (step {result.step})" + (f" -- {result.reason}" if result.reason else ""))
    return 0 if result.status in ("FINISHED",) else 1


def _plan(cfg, run_dir) -> int:
    from catlab.config import Config, flatten
    from catlab.data import build_dataset
    from catlab.models import build_discriminator, build_generator
    data = build_dataset(cfg.data)
    G = build_generator(cfg.model, data.num_classes, cfg.data.resolution, data.images.shape[1])
    D = build_discriminator(cfg.model, data.num_classes, cfg.data.resolution, data.images.shape[1])
    defaults = flatten(Config().to_dict())
    changed = {k: v for k, v in cfg.flat().items() if defaults.get(k) != v}
    print(f"run dir   {run_dir or Path(cfg.run.root) / cfg.run_name()}")
    print(f"config    {cfg.hash()}  (changed: {', '.join(f'{k}={v}' for k, v in changed.items()) or 'none'})")
    print(f"data      {cfg.data.name}: {len(data.labels)} images, {data.num_classes} classes, scales {G.scales}")
    print(f"params    G {sum(p.numel() for p in G.parameters()) / 1e6:.2f}M, "
          f"D {sum(p.numel() for p in D.parameters()) / 1e6:.2f}M ({cfg.model.discriminator})")
    print(f"steps     {cfg.train.steps} x batch {cfg.train.batch}")
    return 0


def cmd_sample(args) -> int:
    from catlab.sampling import sample
    return sample(args.run_dir, args.n, args.out, stage=args.stage, seed=args.seed)


def cmd_encode(args) -> int:
    from catlab.encode import encode
    m = encode(args.source, args.out, vae=args.vae, resolution=args.resolution, flip=args.flip, batch=args.batch,
               device=args.device, dtype=args.dtype, scale_factor=args.scale_factor, root=args.root,
               workers=args.workers)
    n, c, h, w = m["shape"]
    print(f"{'already complete' if m.get('already_complete') else 'wrote'}: {args.out}: {n} latents "
          f"{c}x{h}x{w} {m['dtype']}, {m['num_classes']} classes, scale factor {m['scale_factor']:g}; "
          f"train with data.name=latents:{args.out} data.resolution={h}")
    return 0


def cmd_list(args) -> int:
    if args.what == "datasets":
        from catlab.data import DATASETS
        for name, fn in DATASETS.items():
            print(f"{name:14s} {(fn.__doc__ or '').strip().splitlines()[0] if fn and fn.__doc__ else ''}")
        print(f"{'imagefolder:PATH':14s} one subfolder per class; resized and centre-cropped")
    elif args.what == "models":
        from catlab.models import SIZES
        for name, spec in SIZES.items():
            print(f"{name:6s} " + ", ".join(f"{k}={v}" for k, v in spec.items()))
    else:
        from experiments import STUDIES
        for name, study in STUDIES.items():
            print(f"{name:36s} {study.summary}")
    return 0


def cmd_ablate(args) -> int:
    from experiments.runner import ablate
    return ablate(args.study, profile=args.profile, seeds=args.seeds, workers=args.workers,
                  dry_run=args.dry_run, overrides=args.overrides, storage=args.storage)


def cmd_analyze(args) -> int:
    from analysis.command import analyze
    from experiments import STUDIES
    return analyze(args.target, metrics=args.metrics, n=args.n, profile=args.profile, studies=STUDIES)


def cmd_search(args) -> int:
    from experiments.search import search
    return search(args.study, trials=args.trials, storage=args.storage, workers=args.workers,
                  objective=args.objective, timeout=args.timeout, overrides=args.overrides,
                  profile=args.profile)


def cmd_report(args) -> int:
    from reports.build import report
    return report(args.study, figures_only=args.figures_only, profile=args.profile)


def cmd_sync(args) -> int:
    from catlab.sync import sync_run
    return sync_run(args.run_dir)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "ablate": cmd_ablate, "analyze": cmd_analyze,
            "search": cmd_search, "report": cmd_report, "list": cmd_list, "sync": cmd_sync, "encode": cmd_encode}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # overrides may also come after options: `catlab ablate S --dry-run train.steps=2`
            if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.overrides = [*args.overrides, *extra]
        return COMMANDS[args.command](args)
    except UserError as e:
        if debug:
            raise
        print(f"catlab: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except RunFailed as e:
        if debug:
            raise
        print(f"catlab: run failed: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("catlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
