"""Fuzzed inputs (hypothesis): the override parser and the CLI entry points.

Random keys, values and flags either parse or give one line on stderr (`catlab: error: ...`) and exit 2:
never a traceback, never another exit code, and for a rejected input nothing on disk (no run dir, no
studies/, no MLflow store, no Optuna storage). Generation is derandomised (the same cases every run) and
cheap: pure parsing, `--dry-run` for train and ablate, and a search stopped right after its validation.
A config that train's dry run accepts is not built (its data and models could be huge: data.resolution
can be 2**40); one it rejects is run again without --dry-run, and must be rejected before the trainer.
"""
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catlab import cli
from catlab.config import Config, load_config
from catlab.errors import UserError
from experiments import STUDIES

PARSE_CASES = 500
CLI_CASES = 600
SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

KEYS = sorted(Config().flat())
SECTIONS = sorted({k.rsplit(".", 1)[0] for k in KEYS if "." in k})
ODD_KEYS = ["", ".", "..", "train.", ".steps", "train..steps", "data", "loss.reg", "seed.x", " train.steps ",
            "train.steps.x", "TRAIN.STEPS", "run", "loss.consistency", "model.stages.k", "=", "--", "-x"]
VALUES = ["", " ", "nan", "-nan", "NaN", "inf", "-inf", "1e400", "-1e400", "1e-400", "0", "-0", "1", "-1", "2", "3",
          "4", "7", "8", "16", "24", "32", "0.5", "1.5", "0.99", "1e3", "1e20", "true", "false", "True", "yes", "no",
          "on", "off", "None", "null", "[]", "{}", "[1,2]", '{"a": 1}', "1,2,3", "1,2", "1,nan,1", "0,0,0", "1,-1,1",
          "paper", "uniform", "coarse-heavy", "final-only", "shapes", "layouts", "mnist", "cifar10", "imagefolder:",
          "imagefolder:/nonexistent", "latents:/nonexistent", "tiny", "small", "S", "XXL", "scalewise",
          "scalewise-conv", "aggregated", "concat", "hinge", "rpgan", "ns", "l2", "l1", "lpips-domain", "lpips-alex",
          "area", "bilinear", "nearest", "fp32", "bf16", "fp16", "cpu", "cuda", "auto", "fresh", "shared", "exact",
          "approx", "none", "full", "own-scale", "0x10", "1_000", "\u0663", "\u00bd", " 7 ", "=", "a=b", "~", "-",
          "bogus://x", "http://127.0.0.1:1", "sqlite:///nope/x.db", "../x", "/", "runs"]
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS), st.sampled_from(ODD_KEYS),
                 st.builds(lambda s, t: f"{s}.{t}", st.sampled_from(SECTIONS), text), text)
values = st.one_of(st.sampled_from(VALUES), st.sampled_from(VALUES), st.integers(-2**70, 2**70).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), text)
VALID = [f"{k}={v}" for k, v in Config().flat().items()] + [
    "train.steps=2", "seed=7", "loss.consistency.weight=0", "model.stages=3", "data.resolution=16",
    "loss.adversarial=hinge", "loss.reg.kind=approx", "train.precision=bf16", "model.size=small", "data.n=64"]
overrides = st.lists(st.one_of(st.sampled_from(VALID), st.sampled_from(VALID), st.sampled_from(VALID),
                               st.builds(lambda k, v: f"{k}={v}", keys, values), text), max_size=4)


# ---- the override parser --------------------------------------------------------------------------------
def test_overrides_parse_or_give_one_line_user_error():
    seen = []

    @settings(max_examples=PARSE_CASES, **SETTINGS)
    @given(overrides)
    def check(items):
        try:
            cfg = load_config(items)
        except UserError as e:
            msg = str(e)
            assert msg and "\n" not in msg and "Traceback" not in msg, msg
            seen.append((items, False))
            return
        seen.append((items, True))
        assert isinstance(cfg, Config)
        assert load_config(cfg.flat()).hash() == cfg.hash()                   # config is data: it round-trips
    check()
    accepted = sum(ok for _, ok in seen)
    print(f"override parser: {len(seen)} generated cases, {accepted} accepted")
    assert len(seen) >= PARSE_CASES and min(accepted, len(seen) - accepted) >= 60


# ---- the CLI entry points -----------------------------------------------------------------------------
STUDY_NAMES = st.one_of(st.sampled_from(sorted(STUDIES)), st.sampled_from(sorted(STUDIES)),
                        st.sampled_from(["", "nope", "ablation", "-x"]), text)
COUNTS = st.one_of(st.sampled_from(["1", "2", "3"]), st.sampled_from(["0", "-1", "-5", "nan", "inf", "1.5", "1e9",
                                                                      "x", "", "--"]), st.integers(-10, 10).map(str),
                   text)
PROFILES = st.one_of(st.sampled_from(["cpu", "gpu", "cpu"]), st.sampled_from(["tpu", "", "CPU"]), text)


def _opt(flag: str, vals) -> st.SearchStrategy:
    return st.one_of(vals.map(lambda v: [flag, v]), vals.map(lambda v: [flag, v]), vals.map(lambda v: [f"{flag}={v}"]),
                     st.just([flag]))


PATHS = st.one_of(st.sampled_from(["runs/nope", "/nonexistent", "out", "", ".", "..", "-", "nope.json"]), text)
EXTRA = st.one_of(st.sampled_from([["--nope"], ["-x"], ["--"], ["--help-me"], ["--dry-run"], ["-h1"]]),
                  text.map(lambda t: [t]))
FLAGS = {
    "train": st.one_of(_opt("--run-dir", PATHS), _opt("--config", PATHS), EXTRA),
    "ablate": st.one_of(_opt("--profile", PROFILES), _opt("--seeds", COUNTS), _opt("--workers", COUNTS),
                        _opt("--storage", PATHS), EXTRA),
    "search": st.one_of(_opt("--workers", COUNTS), _opt("--timeout", st.one_of(st.sampled_from(["60", "0.5"]), COUNTS)),
                        _opt("--objective", st.one_of(st.sampled_from(["fid", "fid+misalignment", "lpips"]), text)),
                        _opt("--profile", PROFILES), EXTRA),
    "sample": st.one_of(_opt("--n", COUNTS), _opt("--out", PATHS), _opt("--stage", COUNTS), _opt("--seed", COUNTS),
                        EXTRA),
    "analyze": st.one_of(_opt("--metrics", st.one_of(st.sampled_from(["fid", "l2", "nope", "kid"]), text)),
                         _opt("--n", COUNTS), _opt("--profile", PROFILES), EXTRA),
    "report": st.one_of(_opt("--profile", PROFILES), st.just(["--figures-only"]), EXTRA),
    "list": EXTRA, "sync": EXTRA, "nope": EXTRA, "": EXTRA,
}
TRIALS = st.one_of(_opt("--trials", COUNTS), _opt("--trials", COUNTS), st.just([]))
POSITIONAL = {"train": st.just([]), "ablate": STUDY_NAMES.map(lambda s: [s]),
              "search": st.tuples(STUDY_NAMES, TRIALS).map(lambda t: [t[0], *t[1]]),
              "sample": PATHS.map(lambda p: [p]), "analyze": st.one_of(PATHS, STUDY_NAMES).map(lambda p: [p]),
              "report": STUDY_NAMES.map(lambda s: [s]), "sync": PATHS.map(lambda p: [p]),
              "list": st.one_of(st.sampled_from(["studies", "datasets", "models", "nope"]), text).map(lambda w: [w]),
              "nope": st.just([]), "": st.just([])}
COMMANDS = ["train"] * 4 + ["ablate"] * 3 + ["search"] * 3 + ["list"] * 2 + sorted(set(FLAGS) - {"train", "ablate",
                                                                                                  "search", "list"})
WITH_OVERRIDES = ("train", "ablate", "search")


@st.composite
def command_lines(draw) -> list[str]:
    cmd = draw(st.sampled_from(COMMANDS))
    tokens = [draw(POSITIONAL[cmd])] + draw(st.lists(FLAGS[cmd], max_size=3))
    if cmd in WITH_OVERRIDES:
        tokens += [[o] for o in draw(overrides)]
    order = draw(st.permutations(range(len(tokens))))
    argv = [cmd] + [t for i in order for t in tokens[i] if t != "--debug"]   # --debug shows tracebacks
    if cmd in ("train", "ablate"):                      # dry runs only: nothing trains
        argv.insert(1, "--dry-run")
    return argv


class Accepted(Exception):
    """A search that passed its validation: stopped before it opens its storage."""


class Reached(Exception):
    """A rejected config reached the trainer or the grid."""


def _empty(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_cli_parses_or_gives_one_line_exit_2_and_writes_nothing(workdir, monkeypatch, capsys):
    from catlab import trainer
    from experiments import runner, search
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    monkeypatch.setattr(cli, "_plan", lambda cfg, run_dir: 0)                 # accepted: not built (see above)
    monkeypatch.setattr(search, "open_storage", lambda *a, **k: (_ for _ in ()).throw(Accepted()))
    monkeypatch.setattr(trainer, "train", lambda *a, **k: (_ for _ in ()).throw(Reached("trainer")))
    monkeypatch.setattr(runner, "preflight", lambda *a, **k: (_ for _ in ()).throw(Reached("grid")))
    outcomes = {"accepted": 0, "rejected": 0}

    def run(argv) -> int | str:
        capsys.readouterr()
        try:
            code = cli.main(argv)
        except Accepted:
            code = "accepted"
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err, (argv, err)
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("catlab: error: "), (argv, err)
        else:
            assert code in (0, "accepted"), (argv, code, err)
        return code

    @settings(max_examples=CLI_CASES, **SETTINGS)
    @given(command_lines())
    def check(argv):
        code = run(argv)
        if code == 2 and argv[0] in ("train", "ablate"):   # rejected: so is the real command, before any work
            assert run(argv[:1] + argv[2:]) == 2, argv
        assert _empty(workdir) == [], (argv, _empty(workdir))     # a search's validation writes nothing either
        outcomes["accepted" if code in (0, "accepted") else "rejected"] += 1
    check()
    total = sum(outcomes.values())
    print(f"CLI: {total} generated cases, {outcomes['accepted']} accepted, {outcomes['rejected']} rejected")
    assert total >= CLI_CASES and min(outcomes.values()) >= 60, outcomes
