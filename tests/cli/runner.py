"""Run the CLI in-process and check its one-line user errors (imported by the CLI tests)."""

from __future__ import annotations

from gigapatch.cli import main

# the cheapest sampler settings on the command line
CHEAP = ["--set", "sampler.patch_size=5", "--set", "sampler.steps=3"]


def run(capsys, argv) -> tuple[int, str, str]:
    try:
        code = main([str(x) for x in argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gigapatch: error: ")
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]
