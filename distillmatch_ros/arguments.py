"""Command-line values, checked while argparse reads them, so before any work starts.

One rule for every subcommand: a number is converted and checked by its
:class:`~distillmatch_ros.options.Option` (the definition the API and the node use), a text may
not be empty, and an output path must be one that can be written (no folder where a file is
expected, an image extension OpenCV can write, a place that can be created). A bad value is one
``error:`` line naming the option, exit status 2, and nothing written.

Each ``type`` function carries ``kind`` (and ``option`` for numbers) so that a test can walk
every option of the parser.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable, Optional, Tuple

import cv2

from .backends import BACKENDS, DEVICE
from .options import Option


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``error: argument --slop: ...``."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _typed(kind: str, parse: Callable, option: Optional[Option] = None) -> Callable:
    parse.kind, parse.option = kind, option
    parse.__name__ = kind  # argparse names the type in its own messages
    return parse


def number(option: Option) -> Callable:
    """A number of ``option``'s type, within its range."""
    want = option.type

    def parse(text: str):
        try:
            value = want(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option.name} must be {want.__name__}, got {text!r}") from None
        problem = option.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    return _typed("number", parse, option)


def size(option: Option) -> Callable:
    """``WIDTHxHEIGHT``, each side an int within ``option``'s range."""
    def parse(text: str) -> Tuple[int, int]:
        try:
            w, h = (int(x) for x in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option.name} must be WIDTHxHEIGHT, got {text!r}") from None
        problem = option.problem(w) or option.problem(h)
        if problem and option.range is not None:
            lo, hi = option.range
            problem = f"{option.name} must be WIDTHxHEIGHT with each side in [{lo}, {hi}], got {text!r}"
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return w, h
    return _typed("size", parse, option)


def text(option: Optional[Option] = None) -> Callable:
    """A non-empty string (a topic, a name, an input path), checked by ``option`` when given."""
    def parse(value: str) -> str:
        if not value:
            raise argparse.ArgumentTypeError("must not be empty")
        problem = option.problem(value) if option is not None else None
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    return _typed("text", parse, option)


def output_problem(path: str, folder: bool = False, new: bool = False, image: bool = False) -> Optional[str]:
    """Why ``path`` cannot be written as a file (or a ``folder``; ``new``: that must not exist yet)."""
    if not path:
        return "must not be empty"
    full = os.path.abspath(path)
    if new and os.path.lexists(full):
        return f"{path} already exists; remove it or choose another path"
    if os.path.isdir(full) and not folder:
        return f"{path} is a folder; a file is expected"
    if os.path.exists(full) and folder and not os.path.isdir(full):
        return f"{path} is a file; a folder is expected"
    if image and not cv2.haveImageWriter(full):
        return f"OpenCV has no image writer for {path!r}; use .png, .jpg or .tif"
    existing = full
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if existing != full and not os.path.isdir(existing):
        return f"cannot create {path}: {existing} is not a folder"
    if not os.access(existing, os.W_OK | (os.X_OK if os.path.isdir(existing) else 0)):
        return f"cannot write {path}: {existing} is not writable"
    return None


def output(folder: bool = False, new: bool = False, image: bool = False) -> Callable:
    """An output path checked by :func:`output_problem`."""
    def parse(path: str) -> str:
        problem = output_problem(path, folder=folder, new=new, image=image)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return path
    kind = "new" if new else "folder" if folder else "image" if image else "file"
    return _typed(f"output {kind}", parse)


def add_matcher_args(p: argparse.ArgumentParser) -> None:
    """--model, --backend, --device: which matcher runs, and where (match, bag-eval, calibrate, demo)."""
    p.add_argument("--model", default=None, type=text(),
                   help="checkpoint path or shipped model name (default: shipped default)")
    p.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS)
    p.add_argument("--device", default=None, type=text(DEVICE), help="cpu, cuda or cuda:N (default: the backend's)")
