"""Every `mnist` command the README shows parses: each subcommand's flags are in its `--help`, and
each `mnist train` line's overrides compose (Hydra's `--cfg job`)."""

from __future__ import annotations

import re
import shlex

from support import ROOT, mnist

COMMANDS = ("train", "fetch", "split", "compare", "promote", "predict", "evaluate", "serve", "ui", "runs", "bench")


def readme_commands() -> list[list[str]]:
    """The `mnist ...` lines of the README's code blocks, as words (comments, `srun` and line
    continuations taken away; shell variables given a value)."""
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#.*$", "", line).strip().removeprefix("srun ")
            line = re.sub(r"\$\{?(\w+)\}?", r"\1", line).replace("&&", ";").split(";")[0].strip()
            if line.startswith("mnist"):
                commands.append(shlex.split(line))
    return commands


def _one_point(override: str) -> str:
    """`key=a,b,c` as its first point: what one job of the sweep composes."""
    key, _, value = override.partition("=")
    if "(" in value or "," not in value:
        return override
    return f"{key}={value.split(',')[0]}"


def test_every_mnist_command_in_the_readme_parses():
    commands = readme_commands()
    assert len(commands) >= 20, commands
    helps: dict[tuple, str] = {}
    for words in commands:
        if words[1:] in ([], ["--help"]):
            continue
        command = words[1]
        assert command in COMMANDS, f"`{' '.join(words)}`: no such command"
        if command == "train":
            overrides = [_one_point(w) for w in words[2:] if w not in ("-m", "--multirun")]
            if any(o.startswith("hparams_search=") for o in overrides):
                overrides = [o for o in overrides if not o.startswith("hydra.sweeper.")]
            result = mnist("train", *overrides, "--cfg", "job", timeout=60)
            assert result.returncode == 0, f"`{' '.join(words)}`: {result.stderr[-2000:]}"
            continue
        sub = (command, words[2]) if command == "runs" and len(words) > 2 else (command,)
        if sub not in helps:
            result = mnist(*sub, "--help", timeout=60)
            assert result.returncode == 0, f"`mnist {' '.join(sub)} --help`: {result.stderr[-2000:]}"
            helps[sub] = result.stdout
        for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
            assert flag in helps[sub], f"`{' '.join(words)}`: `mnist {' '.join(sub)}` has no {flag}"
