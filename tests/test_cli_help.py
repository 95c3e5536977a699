"""Every option of every `cnnlab` subcommand says what it does: a help text that is more than its default."""
import argparse
import re

from cnnlab.cli.commands import build_parser


def subparsers(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from subparsers(sub, (*prefix, name))


def test_every_option_has_real_help():
    missing = []
    for path, sub in subparsers(build_parser()):
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            text = (action.help or "").strip()
            bare = re.sub(r"\(?default:? *(%\(default\)s|none|\S+)\)?", "", text, flags=re.IGNORECASE).strip(" ;,.()")
            if action.help == argparse.SUPPRESS:
                continue
            if len(bare) < 8:  # empty, or nothing but a default ("default adam", "(default: None)")
                missing.append(f"cnnlab {' '.join(path)} {'/'.join(action.option_strings) or action.dest}: {text!r}")
    assert not missing, "options without help:\n" + "\n".join(missing)


def test_the_walk_sees_the_subcommands():
    names = {" ".join(path) for path, _ in subparsers(build_parser())}
    assert {"train", "summary", "evaluate", "explain", "show", "bench", "data check"} <= names


def test_no_help_is_a_bare_none_default():
    for path, sub in subparsers(build_parser()):
        for action in sub._actions:
            assert "(default: None)" not in (action.help or ""), (path, action.option_strings)


def test_bench_options_have_help(capsys):
    import pytest

    from cnnlab.bench import mnist_speed
    with pytest.raises(SystemExit):
        mnist_speed.main(["--help"])
    text = capsys.readouterr().out
    options = re.findall(r"^  (--[\w-]+)( [A-Z_]+)?(.*)$", text, flags=re.MULTILINE)
    assert {"--target", "--device", "--repeat"} <= {o[0] for o in options}
    target = text[text.index("--target"):].split("\n  --")[0]
    assert "accuracy" in target
