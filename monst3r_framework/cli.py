"""Command line: ``monst3r-fw run | plugins | recipe check|show|schema | inspect | store ls | ...``.

Errors meant for users print as one line and exit with code 2; ``--verbose`` shows tracebacks.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import InputWarning, Monst3rFWError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="MonST3R as swappable stages: video -> depth, poses, intrinsics, dynamic masks, 4D points.")
recipe_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Check, show and describe recipes.")
store_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Look inside a run store.")
app.add_typer(recipe_app, name="recipe")
app.add_typer(store_app, name="store")

console = Console(stderr=True)
out_console = Console()
STATE = {"verbose": False}


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "--debug", "-v", help="Show tracebacks and per-stage log lines.")] = False) -> None:
    STATE["verbose"] = verbose


# ------------------------------------------------------------------------------------------ helpers


#: Seconds between plain progress lines when stderr is not a terminal (env MONST3R_FW_PROGRESS_SECONDS).
PLAIN_PROGRESS_SECONDS = 10.0


class _NoProgress:
    def advance(self, n: int = 1) -> None:
        pass


@contextmanager
def rich_progress() -> Iterator[Any]:
    """A progress display shared by all stages; yields a progress_factory for RunContext.

    On a terminal: rich bars. Otherwise (a log file, CI, a pipe): plain lines on stderr, one when a
    step starts, then at most one every ``PLAIN_PROGRESS_SECONDS`` while it runs, and one when it
    ends, e.g. ``[  42.1 s] flow triangulation: 12/40 (30%), 28.3 s``. Steps with nothing to do
    (total 0) show nothing.
    """
    import os
    import time

    if not console.is_terminal:
        interval = float(os.environ.get("MONST3R_FW_PROGRESS_SECONDS", PLAIN_PROGRESS_SECONDS))
        origin = time.perf_counter()

        def line(description: str, done: int, total: int, started: float, end: str = "") -> None:
            now = time.perf_counter()
            console.print(f"[{now - origin:7.1f} s] {description}: {done}/{total} ({100 * done // max(total, 1)}%), "
                          f"{now - started:.1f} s{end}", markup=False, highlight=False, soft_wrap=True)

        @contextmanager
        def plain_factory(total: int, description: str) -> Iterator[Any]:
            if total <= 0:
                yield _NoProgress()
                return
            started = last = time.perf_counter()
            state = {"done": 0, "last": last}
            line(description, 0, total, started)

            class Handle:
                def advance(self, n: int = 1) -> None:
                    state["done"] += n
                    now = time.perf_counter()
                    if now - state["last"] >= interval and state["done"] < total:
                        state["last"] = now
                        line(description, state["done"], total, started)

            try:
                yield Handle()
            except BaseException:
                line(description, min(state["done"], total), total, started, " (stopped)")
                raise
            line(description, total, total, started)

        yield plain_factory
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)

    @contextmanager
    def factory(total: int, description: str) -> Iterator[Any]:
        if total <= 0:  # nothing to do: no empty 0/0 bar
            yield _NoProgress()
            return
        task = progress.add_task(description, total=total)

        class Handle:
            def advance(self, n: int = 1) -> None:
                progress.advance(task, n)

        try:
            yield Handle()
        finally:
            progress.update(task, completed=total)

    with progress:
        yield factory


def timing_table(reports: list[Any], title: str = "stages") -> Table:
    table = Table(title=title)
    for col in ("stage", "key", "status", "seconds"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for r in reports:
        status = "cached" if r.cached else ("resumed" if getattr(r, "resumed", False) else "computed")
        table.add_row(r.label, r.key, status, f"{r.seconds:.2f}")
    table.add_row("total", "", "", f"{sum(r.seconds for r in reports):.2f}")
    return table


def _log(msg: str) -> None:
    # in a log file (not a terminal) every finished stage gets a line too, beside the plain progress lines
    finished = not console.is_terminal and (": computed " in msg or ": resumed " in msg)
    if STATE["verbose"] or "reusing" in msg or "redoing" in msg or "ended without finishing" in msg or finished:
        console.print(f"[dim]{msg}[/dim]", highlight=False, soft_wrap=True)


def _overrides(set_: Optional[list[str]], **extra: Any) -> list[str]:
    out = list(set_ or [])
    for key, value in extra.items():
        if value is not None:
            out.append(f"{key}={value}")
    return out


# ------------------------------------------------------------------------------------------ commands


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe name (paper, classical, ...: `monst3r-fw recipe list`) or YAML file.")],
    input: Annotated[str, typer.Argument(help="Video file (mp4, mov, avi, mkv, webm) or folder of images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out"),
    store: Annotated[Optional[str], typer.Option(help="Run store (path or URL). Default: OUT/store.zarr; share one between runs to reuse stages.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a recipe key, e.g. stages.global_aligner.flow_loss_weight=0 (repeatable).")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Pair-predictor weights (sets stages.pair_predictor.checkpoint; env MONST3R_CHECKPOINT).")] = None,
    num_frames: Annotated[Optional[int], typer.Option(help="Keep at most N frames.")] = None,
    long_edge: Annotated[Optional[int], typer.Option(help="Network resolution: long edge in pixels (512 as the "
                                                     "paper; 224 = the 224x224 model; sets input.long_edge).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Keep every k-th frame.")] = None,
    fps: Annotated[Optional[float], typer.Option(help="Resample the video to this frame rate first.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N (default: the recipe's).")] = None,
    recompute: Annotated[Optional[list[str]], typer.Option(help="Recompute this stage kind even if stored, e.g. pair_predictor (repeatable; frames and exporter too).")] = None,
) -> None:
    """Run a recipe on a video or image folder."""
    from .recipe import check_device
    from .runner import run_pipeline

    if device is not None:
        device = check_device(device, "--device")

    overrides = _overrides(set_, **{"stages.pair_predictor.checkpoint": checkpoint, "input.num_frames": num_frames,
                                    "input.long_edge": long_edge, "input.stride": stride, "input.fps": fps})
    with rich_progress() as factory:
        result = run_pipeline(recipe, input, out, overrides=overrides, store=store, device=device,
                              progress_factory=factory, log=_log, recompute=tuple(recompute or ()))
    out_console.print(timing_table(result.reports, title=f"run {result.run_id}"))
    for notice in result.notices:
        out_console.print(f"[yellow]note:[/yellow] {notice}", soft_wrap=True, highlight=False)
    per_frame = result.store_mib_per_frame
    if per_frame:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in per_frame.items() if k != "total")
        out_console.print(f"store: {per_frame['total']:.2f} MiB/frame ({parts})", highlight=False)
    out_console.print(f"outputs: {result.out_dir}  (store: {result.store_location})")


@app.command()
def plugins(
    details: Annotated[bool, typer.Option("--fields/--no-fields", help="Show each type's config fields.")] = True,
) -> None:
    """List stage kinds, their implementations, where each comes from, and their config fields."""
    from .registry import build_registry

    registry = build_registry()
    for kind, entries in registry.by_kind().items():
        # two columns, so that 80-column terminals and log files stay readable: the type, then where
        # it comes from and (with --fields) one `name = default` line per config field
        table = Table(title=kind, title_justify="left", show_lines=details, expand=False)
        table.add_column("type", no_wrap=True)
        table.add_column("from" + (" · config fields (= default)" if details else ""), overflow="fold")
        for entry in entries:
            cell = f"{entry.plugin} · {entry.distribution}\n[dim]{entry.module}[/dim]"
            if details:
                fields = [f"{fname} = {finfo.default!r}" for fname, finfo in entry.cls.config_model.model_fields.items()
                          if fname != "type"]
                cell += "\n" + ("\n".join(fields) if fields else "(no options)")
            table.add_row(entry.name, cell)
        if not entries:
            table.add_row("(none installed)", "")
        out_console.print(table)


@recipe_app.command("check")
def recipe_check(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe names or files.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Overrides to apply before checking.")] = None,
) -> None:
    """Validate recipes against the installed stages (exit 2 on the first problem)."""
    from .recipe import load_recipe

    for path in recipes:
        resolved, _ = load_recipe(path, overrides=list(set_ or []))
        kinds = ", ".join(f"{k}={'off' if c is None else c.type}" for k, c in resolved.stages.items())  # type: ignore[attr-defined]
        out_console.print(f"[green]ok[/green] {path}: {kinds}; exporters: "
                          f"{', '.join(c.type for c in resolved.exporters) or 'none'}")  # type: ignore[attr-defined]


@recipe_app.command("list")
def recipe_list() -> None:
    """Recipes usable by name (built-in and from plugins): name, what each extends, description."""
    from .catalog import recipe_catalog
    from .registry import build_registry

    catalog = recipe_catalog(build_registry(), with_shadowed=True)
    from_plugins = any(e.origin != "built-in" for e in catalog.values())
    table = Table(title="recipes (monst3r-fw run NAME VIDEO; extends: NAME)", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("extends", no_wrap=True)
    if from_plugins:
        table.add_column("from", no_wrap=True)
    table.add_column("description", overflow="fold", ratio=1)
    for entry in catalog.values():
        description, extends = entry.header()
        if entry.shadowed_by:
            description = f"(hidden by the {entry.shadowed_by} recipe of the same name) {description}"
        row = [entry.name, extends or "-"] + ([entry.origin] if from_plugins else []) + [description or "-"]
        table.add_row(*row)
    out_console.print(table)


@recipe_app.command("show")
def recipe_show(
    recipe: Annotated[Path, typer.Argument(help="Recipe name or file.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Overrides to apply.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """Print the fully resolved recipe (extends and overrides applied, every default filled in)."""
    from .recipe import load_recipe

    resolved, _ = load_recipe(recipe, overrides=list(set_ or []))
    if as_json:
        print(json.dumps(resolved.to_dict(), indent=2))
    else:
        print(resolved.to_yaml(), end="")


@recipe_app.command("schema")
def recipe_schema() -> None:
    """Print the JSON Schema of recipes (for editors), built from the installed stages."""
    from .recipe import recipe_json_schema
    from .registry import build_registry

    print(json.dumps(recipe_json_schema(build_registry()), indent=2))


@recipe_app.command("reference")
def recipe_reference(
    write: Annotated[Optional[Path], typer.Option(help="Write to this file instead of stdout (e.g. docs/recipe-reference.md).")] = None,
) -> None:
    """Print the Markdown reference of every recipe key (generated from the installed stages)."""
    from .recipe import recipe_reference_markdown
    from .registry import build_registry

    text = recipe_reference_markdown(build_registry())
    if write is None:
        print(text, end="")
    else:
        write.write_text(text)


@app.command()
def inspect(run_dir: Annotated[Path, typer.Argument(help="A run's output folder (holds run.json).")]) -> None:
    """Show a run's stages: status, cached or not, timings, array shapes."""
    from .runner import PIPELINE_KINDS
    from .store import RunStore

    status_path = run_dir / "run.json"
    if not status_path.exists():
        raise Monst3rFWError(f"{run_dir}: no run.json; pass the --out folder of a `monst3r-fw run`")
    status = json.loads(status_path.read_text())
    out_console.print(f"run {status.get('run_id')}: [bold]{status.get('status')}[/bold]  input {status.get('input')}  "
                      f"device {status.get('device')}")
    if status.get("error"):
        out_console.print(f"error: {status['error']}")
    table = Table()
    for col in ("stage", "key", "status", "seconds", "arrays"):
        table.add_column(col)
    store = RunStore(status["store"], lock=False)
    for rep in status.get("stages", []):
        kind, key = rep["kind"], rep["key"]
        arrays = ""
        if kind in PIPELINE_KINDS or kind == "frames":
            group = store.get_group(store.group_path(kind, key))
            if group is not None:
                arrays = "\n".join(f"{name} {tuple(arr.shape)} {arr.dtype}" for name, arr in sorted(group.arrays()))
        state = "cached" if rep["cached"] else ("resumed" if rep.get("resumed") else "computed")
        table.add_row(rep["label"], key, state, f"{rep['seconds']:.2f}", arrays)
    out_console.print(table)


@store_app.command("ls")
def store_ls(store: Annotated[str, typer.Argument(help="Store path (e.g. out/store.zarr).")]) -> None:
    """List stage results in a store: kind, type, key, complete, size, and the runs using them."""
    from .store import RunStore

    if "://" not in store and not Path(store).exists():
        raise Monst3rFWError(f"store {store} does not exist")
    st = RunStore(store, lock=False)
    users: dict[str, list[str]] = {}
    for run_id, attrs in st.runs().items():
        for key in (attrs.get("keys") or {}).values():
            users.setdefault(key, []).append(run_id)
    table = Table()
    for col in ("kind", "type", "key", "complete", "MB", "runs"):
        table.add_column(col)
    for kind, key, attrs in st.iter_stage_groups():
        size = st.disk_bytes(kind, key)
        table.add_row(kind, str(attrs.get("type", "")), key, str(attrs.get("complete") is True),
                      f"{size / 1e6:.1f}" if size >= 0 else "?", ", ".join(users.get(key, [])))
    out_console.print(table)


@store_app.command("verify")
def store_verify(store: Annotated[str, typer.Argument(help="Store path (e.g. out/store.zarr).")]) -> None:
    """Re-hash every file of every complete stage against its digest from commit; name what is damaged.
    Exit 1 when something is."""
    from .store import RunStore

    if not Path(store).is_dir():
        raise Monst3rFWError(f"store {store} does not exist or is not a folder; pass a local store path")
    st = RunStore(store, lock=False)
    damaged = 0
    for kind, key, attrs in st.iter_stage_groups(errors=True):
        if attrs.get("damaged"):
            problems = [attrs["damaged"]]
        elif attrs.get("complete") is not True:
            out_console.print(f"{kind}/{key}: incomplete (an interrupted run; redone by the next run)")
            continue
        else:
            problems = st.verify(kind, key, full=True)
        if problems:
            damaged += 1
            for problem in problems:
                out_console.print(f"{kind}/{key}: DAMAGED: {problem}", soft_wrap=True, highlight=False)
        else:
            note = "" if "integrity" in attrs else " (no digests: written before they were recorded)"
            out_console.print(f"{kind}/{key}: ok{note}")
    if damaged:
        out_console.print(f"{damaged} damaged stage result(s); remove with `monst3r-fw store rm {store} KIND/KEY` "
                          "or rerun with --recompute KIND", soft_wrap=True, highlight=False)
        raise typer.Exit(1)


@store_app.command("rm")
def store_rm(
    store: Annotated[str, typer.Argument(help="Store path (e.g. out/store.zarr).")],
    stage: Annotated[str, typer.Argument(help="KIND (every result of that kind) or KIND/KEY, as `store ls` shows.")],
) -> None:
    """Remove stored stage results (the next run recomputes them)."""
    from .stages import STAGE_KINDS
    from .store import RunStore

    if not Path(store).is_dir():
        raise Monst3rFWError(f"store {store} does not exist or is not a folder; pass a local store path")
    kind, _, key = stage.partition("/")
    if kind not in (*STAGE_KINDS, "frames"):
        raise Monst3rFWError(f"{stage}: unknown stage kind {kind!r}; choose from frames, {', '.join(STAGE_KINDS)}")
    with RunStore(store) as st:  # locked: never under a running run
        keys = [key] if key else [k for kd, k, _ in st.iter_stage_groups(errors=True) if kd == kind]
        keys = [k for k in keys if st.exists(kind, k)]
        if not keys:
            raise Monst3rFWError(f"store {store}: nothing stored for {stage}; `monst3r-fw store ls {store}` lists results")
        for k in keys:
            st.delete(kind, k)
            out_console.print(f"removed {kind}/{k}")


CLI_ENTRY_POINT_GROUP = "monst3r_fw_cli"


def _command_names(target: typer.Typer) -> list[str]:
    """Names of the verbs and verb groups registered on ``target`` (typer's naming: ``eval_suite`` -> ``eval-suite``)."""
    names = [info.name or info.callback.__name__.lower().replace("_", "-")
             for info in target.registered_commands if info.callback is not None or info.name]
    names += [info.name or "" for info in target.registered_groups]
    return names


def register_cli_plugin(target: typer.Typer, register: Any, origin: str) -> None:
    """Call one ``register(app)`` and keep only the verbs that do not shadow existing ones.

    A plugin may add verbs and verb groups; one that reuses a name already on ``target`` (a core
    verb or an earlier plugin's) is dropped with one warning line naming both, so an installed
    package can never silently change what ``monst3r-fw run`` does.
    """
    before_cmds, before_groups = len(target.registered_commands), len(target.registered_groups)
    taken = set(_command_names(target))
    try:
        register(target)
    except Exception as exc:  # drop whatever it added before failing
        del target.registered_commands[before_cmds:], target.registered_groups[before_groups:]
        console.print(f"[yellow]warning:[/yellow] CLI plugin {origin}: register(app) failed: {type(exc).__name__}: {exc}; "
                      "its verbs are missing", soft_wrap=True, highlight=False)
        return
    added_cmds = target.registered_commands[before_cmds:]
    added_groups = target.registered_groups[before_groups:]
    del target.registered_commands[before_cmds:], target.registered_groups[before_groups:]
    for info in added_cmds:
        name = info.name or (info.callback.__name__.lower().replace("_", "-") if info.callback else "")
        if name in taken:
            console.print(f"[yellow]warning:[/yellow] CLI plugin {origin}: verb {name!r} already exists; ignored",
                          soft_wrap=True, highlight=False)
            continue
        taken.add(name)
        target.registered_commands.append(info)
    for group in added_groups:
        if (group.name or "") in taken:
            console.print(f"[yellow]warning:[/yellow] CLI plugin {origin}: verb group {group.name!r} already exists; ignored",
                          soft_wrap=True, highlight=False)
            continue
        taken.add(group.name or "")
        target.registered_groups.append(group)


def register_cli_plugins(target: typer.Typer, load_entrypoints: bool = True) -> None:
    """Add the verbs of installed packages: entry-point group ``monst3r_fw_cli``.

    Each entry names a function ``register(app: typer.Typer) -> None`` (e.g.
    ``view = "monst3r_fw_viewer.cli:register"``); its module must be import-light (stdlib, typer,
    the core vocabulary), since every ``monst3r-fw`` call, ``--help`` included, imports it.
    ``MONST3R_FW_DISABLE_PLUGINS=name,...`` skips entries by name, as for stage plugins. A package
    that fails to import costs its own verbs only: one warning line, the other verbs still work.
    """
    import importlib.metadata as md
    import os

    from . import cli_batch  # the core's own optional verbs

    register_cli_plugin(target, cli_batch.register, "monst3r_framework.cli_batch")
    if not load_entrypoints:
        return
    blocked = {n.strip() for n in os.environ.get("MONST3R_FW_DISABLE_PLUGINS", "").split(",") if n.strip()}
    seen: set[str] = set()
    for ep in sorted(md.entry_points(group=CLI_ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in blocked or ep.name in seen:
            continue
        seen.add(ep.name)
        dist = getattr(ep, "dist", None)
        origin = f"{ep.name!r} ({dist.metadata['Name']} {dist.version})" if dist is not None else repr(ep.name)
        try:
            register = ep.load()
        except Exception as exc:  # a broken add-on must not take the core verbs down with it
            console.print(f"[yellow]warning:[/yellow] CLI plugin {origin} failed to import {ep.value!r}: "
                          f"{type(exc).__name__}: {exc}; its verbs are missing (MONST3R_FW_DISABLE_PLUGINS={ep.name} "
                          "silences this)", soft_wrap=True, highlight=False)
            continue
        if not callable(register):
            console.print(f"[yellow]warning:[/yellow] CLI plugin {origin}: {ep.value!r} is not a function "
                          "register(app); ignored", soft_wrap=True, highlight=False)
            continue
        register_cli_plugin(target, register, origin)


register_cli_plugins(app)


def _printable(text: str) -> str:
    """Message text for rich: markup-like brackets escaped, and the lone surrogates that stand for the
    bytes of a non-UTF-8 path shown as ``\\xNN`` (printing them would raise)."""
    from rich.markup import escape

    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return escape(raw.decode("utf-8", "backslashreplace"))


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: Optional[str] = None) -> None:
    if issubclass(category, InputWarning):
        console.print(f"[yellow]warning:[/yellow] {_printable(str(message))}", soft_wrap=True, highlight=False)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _interrupted(exc: BaseException) -> None:
    """One line, exit 130 (Ctrl-C) or 143 (SIGTERM)."""
    code = getattr(exc, "exit_code", 130)
    name = getattr(exc, "signal_name", "Ctrl-C")
    console.print(f"interrupted by {name}: completed stages are kept in the store; rerun the same command to resume",
                  soft_wrap=True, highlight=False)
    sys.exit(code)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point: one-line errors, exit 2 for user errors."""
    warnings.showwarning = _show_warning
    import signal

    from .errors import Interrupted

    caught: list[Interrupted] = []

    def on_signal(signum: int, frame: Any) -> None:
        exc = Interrupted("SIGTERM", 143) if signum == signal.SIGTERM else Interrupted("Ctrl-C", 130)
        caught.append(exc)
        raise exc

    if threading_is_main():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # zarr's event loop: errors reach us as exceptions
    try:
        code = app(args=argv, standalone_mode=False)
        # typer turns an interrupt that reached it into a returned exit code 130; a command that
        # caught it as its normal stop (``view``: Ctrl-C ends the server) returns 0 and exits 0
        if caught and isinstance(code, int) and code:
            _interrupted(caught[-1])
        if isinstance(code, int) and code:  # typer.Exit(n) is returned, not raised, without standalone mode
            sys.exit(code)
    except Monst3rFWError as exc:
        if STATE["verbose"]:
            console.print_exception()
        # _printable escapes markup: messages may hold brackets, e.g. pip install 'monst3r-fw[ray]'
        console.print(f"[red]error:[/red] {_printable(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        _interrupted(caught[-1] if caught else exc)
    except SystemExit:
        raise
    except Exception as exc:
        # typer's (possibly vendored) click: usage errors know how to show themselves
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            if caught or isinstance(exc.__context__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
                _interrupted(caught[-1] if caught else exc.__context__)
            sys.exit(1)
        if STATE["verbose"]:
            console.print_exception()
        else:
            console.print(f"[red]internal error:[/red] {type(exc).__name__}: {_printable(str(exc))} (rerun with --verbose for the traceback)",
                          soft_wrap=True, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
