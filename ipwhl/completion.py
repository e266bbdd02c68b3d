"""Shell completion scripts for bash, zsh and fish, generated from the argparse parser.

The parser is read into a small tree (`Command`, `Option`), and each shell's script is
written from that tree, so a new command or option is completed without touching this file.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["SHELLS", "Command", "Option", "describe", "script"]

SHELLS = ("bash", "zsh", "fish")


@dataclass(frozen=True)
class Option:
    """An option: its flags, whether it takes a value, the values it allows, its help."""

    flags: tuple[str, ...]
    takes_value: bool
    choices: tuple[str, ...]
    help: str


@dataclass(frozen=True)
class Command:
    """A command (the program itself at the top): its words, options and subcommands."""

    path: tuple[str, ...]
    help: str
    options: tuple[Option, ...]
    commands: tuple[Command, ...]
    argument_choices: tuple[str, ...]  # values a positional argument allows (completion SHELL)

    def walk(self) -> Iterator[Command]:
        """This command and every command under it, parents first."""
        yield self
        for command in self.commands:
            yield from command.walk()


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split()).split(". ")[0].rstrip(".")


def describe(parser: argparse.ArgumentParser, path: tuple[str, ...] = (),
             help: str = "") -> Command:
    """The command tree of `parser` (hidden options and commands left out)."""
    options: list[Option] = []
    commands: list[Command] = []
    argument_choices: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                commands.append(describe(sub, (*path, name), _one_line(summaries.get(name))))
        elif action.help == argparse.SUPPRESS:
            continue
        elif action.option_strings:
            options.append(Option(
                tuple(action.option_strings), action.nargs != 0,
                tuple(map(str, action.choices or ())), _one_line(action.help),
            ))
        elif action.choices:
            argument_choices.extend(map(str, action.choices))
    return Command((parser.prog.split()[0], *path), help, tuple(options), tuple(commands),
                   tuple(argument_choices))


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` (one of SHELLS) of the program `parser` parses."""
    tree = describe(parser)
    writers = {"bash": _bash, "zsh": _zsh, "fish": _fish}
    if shell not in writers:
        raise ValueError(f"no completion for {shell!r}; expected one of {', '.join(SHELLS)}")
    return writers[shell](tree)


def _quote(text: str) -> str:
    """`text` in single quotes for any of the three shells."""
    return "'" + text.replace("'", "'\\''") + "'"


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- bash --------------------------------------------------------------------------------------


def _case(name: str, rows: list[tuple[str, str]]) -> list[str]:
    lines = [f"{name}() {{", '    case "$1" in']
    lines += [f"        {_quote(key)}) echo {_quote(value)} ;;" for key, value in rows if value]
    lines += ["    esac", "}"]
    return lines


def _bash(tree: Command) -> str:
    program = tree.path[0]
    function = f"_{program}"
    commands = list(tree.walk())
    words = [(" ".join(c.path), " ".join(s.path[-1] for s in c.commands)) for c in commands]
    flags = [(" ".join(c.path), " ".join(f for o in c.options for f in o.flags))
             for c in commands]
    valued = [(" ".join(c.path), " ".join(f for o in c.options if o.takes_value for f in o.flags))
              for c in commands]
    choices = [(f"{' '.join(c.path)} {flag}", " ".join(o.choices))
               for c in commands for o in c.options if o.choices for flag in o.flags]
    arguments = [(" ".join(c.path), " ".join(c.argument_choices)) for c in commands]
    lines = [
        f"# bash completion for {program}, generated from its parser.",
        f'# Load it with: eval "$({program} completion bash)"',
        f"# or save it:   {program} completion bash > ~/.local/share/bash-completion/"
        f"completions/{program}",
        "",
        *_case(f"{function}_commands", words),
        *_case(f"{function}_flags", flags),
        *_case(f"{function}_valued", valued),
        *_case(f"{function}_choices", choices),
        *_case(f"{function}_arguments", arguments),
        "",
        f"{function}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        f'    local words_path={program} word skip="" i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        '        if [[ -n $skip ]]; then skip=""; continue; fi',
        "        if [[ $word == -* ]]; then",
        f'            [[ " $({function}_valued "$words_path") " == *" $word "* ]] && skip=1',
        "            continue",
        "        fi",
        f'        if [[ " $({function}_commands "$words_path") " == *" $word "* ]]; then',
        '            words_path="$words_path $word"',
        "        fi",
        "    done",
        f'    if [[ $prev == -* && " $({function}_valued "$words_path") " == *" $prev "* ]]; then',
        f'        local choices; choices="$({function}_choices "$words_path $prev")"',
        '        if [[ -n $choices ]]; then',
        '            mapfile -t COMPREPLY < <(compgen -W "$choices" -- "$cur")',
        "        else",
        '            mapfile -t COMPREPLY < <(compgen -f -- "$cur")',
        "        fi",
        "        return",
        "    fi",
        "    if [[ $cur == -* ]]; then",
        f'        mapfile -t COMPREPLY < <(compgen -W "$({function}_flags "$words_path")" '
        '-- "$cur")',
        "        return",
        "    fi",
        f'    local words; words="$({function}_commands "$words_path") '
        f'$({function}_arguments "$words_path")"',
        '    if [[ -n ${words// /} ]]; then',
        '        mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")',
        "    else",
        '        mapfile -t COMPREPLY < <(compgen -f -- "$cur")',
        "    fi",
        "}",
        f"complete -o filenames -o bashdefault -F {function} {program}",
        "",
    ]
    return "\n".join(lines)


# -- zsh ---------------------------------------------------------------------------------------


def _zsh_described(items: list[tuple[str, str]]) -> str:
    # _describe splits NAME:TEXT at the first unescaped colon.
    return " ".join(_quote(name.replace(":", r"\:") + ":" + text) for name, text in items)


def _zsh(tree: Command) -> str:
    program = tree.path[0]
    function = f"_{program}"
    commands = list(tree.walk())
    lines = [
        f"#compdef {program}",
        f"# zsh completion for {program}, generated from its parser.",
        f"# Load it with: eval \"$({program} completion zsh)\" (after compinit),",
        f"# or save it as _{program} in a directory of your $fpath.",
        "",
        f"{function}_table() {{",
        "    # $1: the command path, $2: what is asked for",
        '    case "$1|$2" in',
    ]
    for command in commands:
        key = " ".join(command.path)
        subcommands = [(c.path[-1], c.help) for c in command.commands]
        flags = [(flag, option.help) for option in command.options for flag in option.flags]
        valued = [flag for option in command.options if option.takes_value
                  for flag in option.flags]
        if subcommands:
            lines.append(f"        {_quote(key + '|commands')}) "
                         f"reply=({_zsh_described(subcommands)}) ;;")
        if flags:
            lines.append(f"        {_quote(key + '|flags')}) reply=({_zsh_described(flags)}) ;;")
        if valued:
            lines.append(f"        {_quote(key + '|valued')}) reply=({' '.join(valued)}) ;;")
        if command.argument_choices:
            lines.append(f"        {_quote(key + '|arguments')}) "
                         f"reply=({' '.join(map(_quote, command.argument_choices))}) ;;")
        for option in command.options:
            for flag in option.flags if option.choices else ():
                lines.append(f"        {_quote(key + '|' + flag)}) "
                             f"reply=({' '.join(map(_quote, option.choices))}) ;;")
    lines += [
        "        *) reply=() ;;",
        "    esac",
        "}",
        "",
        f"{function}() {{",
        f"    local words_path={program} word skip= i",
        "    local -a reply names",
        "    for ((i = 2; i < CURRENT; i++)); do",
        "        word=${words[i]}",
        "        if [[ -n $skip ]]; then skip=; continue; fi",
        "        if [[ $word == -* ]]; then",
        f'            {function}_table "$words_path" valued',
        "            (( ${reply[(Ie)$word]} )) && skip=1",
        "            continue",
        "        fi",
        f'        {function}_table "$words_path" commands',
        "        names=(${reply%%:*})",
        '        (( ${names[(Ie)$word]} )) && words_path="$words_path $word"',
        "    done",
        "    local prev=${words[CURRENT-1]}",
        f'    {function}_table "$words_path" valued',
        "    if [[ $prev == -* ]] && (( ${reply[(Ie)$prev]} )); then",
        f'        {function}_table "$words_path" "$prev"',
        "        if (( $#reply )); then compadd -a reply; else _files; fi",
        "        return",
        "    fi",
        "    if [[ ${words[CURRENT]} == -* ]]; then",
        f'        {function}_table "$words_path" flags',
        "        _describe -t options option reply",
        "        return",
        "    fi",
        f'    {function}_table "$words_path" commands',
        "    if (( $#reply )); then",
        "        _describe -t commands command reply",
        "        return",
        "    fi",
        f'    {function}_table "$words_path" arguments',
        "    if (( $#reply )); then compadd -a reply; else _files; fi",
        "}",
        "",
        f'if [[ $zsh_eval_context[-1] == loadautofunc ]]; then {function} "$@"; '
        f"else compdef {function} {program}; fi",
        "",
    ]
    return "\n".join(lines)


# -- fish --------------------------------------------------------------------------------------


def _fish(tree: Command) -> str:
    program = tree.path[0]
    lines = [
        f"# fish completion for {program}, generated from its parser.",
        f"# Load it with: {program} completion fish | source",
        f"# or save it:   {program} completion fish > ~/.config/fish/completions/{program}.fish",
        "",
    ]
    for command in tree.walk():
        words = command.path[1:]
        below = [c.path[-1] for c in command.commands]
        if words:
            condition = " ; and ".join(f"__fish_seen_subcommand_from {w}" for w in words)
        else:
            condition = "__fish_use_subcommand"
        if words and below:
            # Not once a subcommand of this one is given, so `roots add <TAB>` offers no `rm`.
            condition += f" ; and not __fish_seen_subcommand_from {' '.join(below)}"
        for sub in command.commands:
            lines.append(f"complete -c {program} -f -n {_fish_quote(condition)} "
                         f"-a {sub.path[-1]} -d {_fish_quote(sub.help)}")
        if command.argument_choices:
            lines.append(f"complete -c {program} -f -n {_fish_quote(condition)} "
                         f"-a {_fish_quote(' '.join(command.argument_choices))}")
        for option in command.options:
            spec = []
            for flag in option.flags:
                if flag.startswith("--"):
                    spec.append(f"-l {flag[2:]}")
                elif len(flag) == 2:
                    spec.append(f"-s {flag[1]}")
                else:
                    spec.append(f"-o {flag[1:]}")
            if option.choices:
                spec.append(f"-x -a {_fish_quote(' '.join(option.choices))}")
            elif option.takes_value:
                spec.append("-r")
            lines.append(f"complete -c {program} -n {_fish_quote(condition)} {' '.join(spec)} "
                         f"-d {_fish_quote(option.help)}")
    lines.append("")
    return "\n".join(lines)
